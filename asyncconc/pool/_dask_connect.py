"""DaskPool's side of the cluster: connect (or start a LocalCluster), survey, release.

Dask's own connect waits 30 s by default and then raises a bare ``OSError``;
here the wait is ``connect_timeout`` and the failure a :class:`PoolError`
naming the address. Nothing is closed that the pool did not open: a Client
passed in stays open, only the pool's worker plugin is removed from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from asyncconc._errors import PoolError

__all__ = [
    "CPU_RESOURCE",
    "DEFAULT_START_METHOD",
    "INSTALL_HINT",
    "QUIET_CONFIG",
    "START_METHODS",
    "Connection",
    "connect",
    "release",
    "require_distributed",
    "survey_workers",
]

CPU_RESOURCE = "asyncconc-cpu"
INSTALL_HINT = "pip install 'asyncconc[dask]'"

# Dask's housekeeping in a pool-owned cluster, made less frequent. Measured on
# a warm 2-worker LocalCluster (2 cores): with Dask's defaults each worker
# burned ~6% of a core while idle and the parent (scheduler and nannies) ~6%;
# during the 8-chunk sum the workers' event-loop threads used 1.2-1.4 s of CPU
# against 6.8 s in the kernel, taking the GIL from it every 10-20 ms. With
# these values: ~0.6% per worker and ~1.3% in the parent while idle, and 0.4 s
# in the event-loop threads during the sum (docs/benchmarks-pool.md, section G).
QUIET_CONFIG: dict[str, object] = {
    # The statistical profiler samples every thread's stack on the worker's
    # event loop (10 ms by default); the dashboard's Profile page still fills.
    "distributed.worker.profile.interval": "100ms",
    # The event-loop health check (20 ms); a 3 s stall is still reported.
    "distributed.admin.tick.interval": "500ms",
    # CPU, memory, network and disk samples for the dashboard (500 ms).
    "distributed.admin.system-monitor.interval": "2s",
    # The memory limits' check in workers and nannies (100 ms): a runaway
    # task is paused or its worker restarted within 0.5 s instead of 0.1 s.
    "distributed.worker.memory.monitor-interval": "500ms",
}
START_METHODS = ("spawn", "forkserver", "fork")
# How a pool-owned cluster starts its workers unless told otherwise. Not
# "spawn" (Dask's default): each spawned worker imports distributed afresh,
# 0.5-0.9 s of CPU here, and two of them on two cores were the slowest start
# measured (docs/benchmarks-pool.md, section G). Not "fork": Dask forks from
# a process whose threads may hold locks. multiprocessing's fork server is a
# fresh single-threaded interpreter that imports distributed once and forks
# every worker from there: safe, and one import instead of one per worker.
DEFAULT_START_METHOD = "forkserver"

# The open pool-owned clusters whose workers came from the fork server that
# asyncconc started, and whether asyncconc started the one now running.
_forkserver_users = 0
_forkserver_ours = False


def require_distributed() -> Any:
    """The ``distributed`` module, or :class:`PoolError` saying how to install it."""
    try:
        import distributed
    except ImportError as exc:
        raise PoolError(
            f"the Dask backend needs the 'distributed' package: {INSTALL_HINT}"
        ) from exc
    return distributed


@dataclass(slots=True)
class Connection:
    """What a pool holds of a cluster; filled step by step, so a failed start releases it."""

    client: Any = None
    cluster: Any = None
    owns_client: bool = False
    holds_forkserver: bool = False


async def connect(
    conn: Connection,
    address: str | Any | None,
    *,
    local_workers: int,
    threads: int,
    connect_timeout: float,
    start_method: str | None = None,
) -> None:
    """Fill ``conn``: start a LocalCluster (``address=None``), connect, or adopt a Client.

    A pool-owned LocalCluster starts its worker processes with
    ``start_method`` (:data:`DEFAULT_START_METHOD` when ``None``) and runs
    with :data:`QUIET_CONFIG`. Then wait up to ``connect_timeout`` for the
    workers (all of a pool-owned cluster's, else one).
    """
    distributed = require_distributed()
    import dask

    if address is None:
        # Set while the in-process scheduler is created: it reads the value
        # then. 0: the first worker death reaches the pool, as with LoopPool.
        # The worker processes inherit the whole configuration as it is now.
        method = start_method or DEFAULT_START_METHOD
        settings = {
            "distributed.scheduler.allowed-failures": 0,
            **QUIET_CONFIG,
            # Read at each worker start: a restart after this block uses Dask's.
            "distributed.worker.multiprocessing-method": method,
        }
        with dask.config.set(settings):
            if method == "forkserver":
                _hold_forkserver(conn)
            conn.cluster = await distributed.LocalCluster(
                n_workers=local_workers,
                threads_per_worker=threads,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",  # None would still bind 8787
                resources={CPU_RESOURCE: 1},
                asynchronous=True,
            )
        conn.client = await distributed.Client(conn.cluster, asynchronous=True)
        conn.owns_client = True
    elif isinstance(address, str):
        try:
            async with asyncio.timeout(connect_timeout + 1.0):
                conn.client = await distributed.Client(
                    address, asynchronous=True, timeout=connect_timeout
                )
        except (OSError, TimeoutError) as exc:
            raise PoolError(
                f"cannot reach the Dask scheduler at {address} within {connect_timeout:g} s: {exc}"
            ) from exc
        conn.owns_client = True
    else:
        if not getattr(address, "asynchronous", False):
            raise ValueError("DaskPool needs an asynchronous Client (asynchronous=True)")
        conn.client = address
    wanted = local_workers if conn.cluster is not None else 1
    try:
        await conn.client.wait_for_workers(wanted, timeout=connect_timeout)
    except TimeoutError as exc:
        raise PoolError(
            f"the Dask scheduler at {conn.client.scheduler.address} has no workers "
            f"after {connect_timeout:g} s"
        ) from exc


async def survey_workers(client: Any) -> tuple[int, bool]:
    """How many workers, and whether every one advertises :data:`CPU_RESOURCE`."""
    info = await client.scheduler.identity()
    workers: dict[str, Any] = info.get("workers", {})
    has_cpu = bool(workers) and all(
        CPU_RESOURCE in w.get("resources", {}) for w in workers.values()
    )
    return max(1, len(workers)), has_cpu


async def release(conn: Connection, plugin_name: str, timeout: float) -> None:
    """Remove the pool's plugin; close the client and cluster if the pool opened them.

    Idempotent; each step is bounded by ``timeout``. The fork server the
    cluster's workers came from is stopped last, once no other open pool
    uses it (its workers are gone by then: it reports their exit codes).
    """
    client, cluster = conn.client, conn.cluster
    conn.cluster = None
    try:
        if client is not None:
            await _release_client(conn, client, cluster, plugin_name, timeout)
        elif cluster is not None:
            async with asyncio.timeout(timeout):
                await cluster.close()
    finally:
        _drop_forkserver(conn)


async def _release_client(
    conn: Connection, client: Any, cluster: Any, plugin_name: str, timeout: float
) -> None:
    try:
        with contextlib.suppress(Exception):  # best effort: the workers may be gone
            async with asyncio.timeout(timeout):
                if client.status == "running":
                    await client.unregister_worker_plugin(plugin_name)
    finally:
        if conn.owns_client:
            conn.owns_client = False
            async with asyncio.timeout(timeout):
                await client.close()
        if cluster is not None:
            async with asyncio.timeout(timeout):
                await cluster.close()


def _hold_forkserver(conn: Connection) -> None:
    """Start multiprocessing's fork server now, unless one runs; count this pool in.

    Called inside the pool's ``dask.config.set`` block, so Dask's own
    ``get_mp_context`` sets the server's preload (``distributed`` and those
    of numpy, pandas, lz4 that are installed) and imports those modules here
    in passing, as for any Dask forkserver cluster.

    When this process then runs a single OS thread, the server is a clean
    fork of this process (:func:`_fork_forkserver`): it holds every module
    a spawned server would preload, imported already, and the first worker
    forks in milliseconds instead of after the 0.6-1.0 s a new interpreter
    spends importing ``distributed``. Otherwise (another thread runs, not
    Linux, or a Python whose private fork-server layout this module does not
    know) multiprocessing spawns its server as usual; starting it before the
    scheduler lets its imports overlap the scheduler's start instead of
    following it. Threads count at the OS level: with numpy installed,
    ``import distributed`` imports it, and OpenBLAS starts its threads then
    (none with ``OPENBLAS_NUM_THREADS=1``).
    """
    global _forkserver_users, _forkserver_ours
    import multiprocessing.forkserver

    require_distributed().utils.get_mp_context()
    # The module's server object is private: whether it runs is only told
    # there, and stopping it (_stop) is what CPython's own tests use.
    if multiprocessing.forkserver._forkserver._forkserver_pid is None:  # type: ignore[attr-defined]
        if not _fork_forkserver():
            multiprocessing.forkserver.ensure_running()
        _forkserver_ours = True
    _forkserver_users += 1
    conn.holds_forkserver = True


# The private layout of multiprocessing.forkserver that _fork_forkserver
# fills in (CPython 3.11-3.13); 3.14 adds an authentication key, and any
# other layout falls back to multiprocessing's own start.
_FORKSERVER_FIELDS = frozenset(
    {
        "_forkserver_address",
        "_forkserver_alive_fd",
        "_forkserver_pid",
        "_inherited_fds",
        "_lock",
        "_preload_modules",
    }
)
_FORKSERVER_MAIN_PARAMETERS = ("listener_fd", "alive_r", "preload", "main_path", "sys_path")


def _forkserver_layout_known() -> bool:
    import inspect
    import multiprocessing.forkserver as forkserver

    server = getattr(forkserver, "_forkserver", None)
    main = getattr(forkserver, "main", None)
    if server is None or main is None:
        return False
    try:
        parameters = tuple(inspect.signature(main).parameters)
    except (TypeError, ValueError):
        return False
    return set(vars(server)) == _FORKSERVER_FIELDS and parameters == _FORKSERVER_MAIN_PARAMETERS


def _fork_forkserver() -> bool:
    """Start multiprocessing's fork server as a clean fork of this process.

    What ``multiprocessing.forkserver.ensure_running`` does, with a fork of
    this process (:func:`asyncconc._forking.fork_server`) in place of a new
    interpreter: the resource tracker, a listening socket, the "alive" pipe
    whose write end this process and every worker hold (the server exits
    when all of them have closed it), and the server object's fields set as
    that function sets them, so that the workers' requests, the resource
    tracker and ``_stop`` work as for a spawned server. The child runs the
    module's ``main`` without preloads (this process has imported them).
    False, with nothing started, when the fork is not possible.
    """
    if not _forkserver_layout_known():
        return False
    from asyncconc import _forking

    if not _forking.single_threaded():
        return False
    import multiprocessing.forkserver as forkserver
    from multiprocessing import connection, resource_tracker, util

    server: Any = forkserver._forkserver
    resource_tracker.ensure_running()
    with socket.socket(socket.AF_UNIX) as listener:
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
        listener.bind(address)
        if not util.is_abstract_socket_namespace(address):
            os.chmod(address, 0o600)
        listener.listen()
        alive_r, alive_w = os.pipe()
        try:

            def serve() -> None:
                os.close(alive_w)
                forkserver.main(listener.fileno(), alive_r, [])

            pid = _forking.fork_server(serve, keep=(listener.fileno(), alive_r))
        except BaseException:
            os.close(alive_w)
            raise
        finally:
            os.close(alive_r)
        if pid is None:  # a thread started meanwhile: multiprocessing's own start
            os.close(alive_w)
            if not util.is_abstract_socket_namespace(address):
                os.unlink(address)
            return False
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    return True


def _drop_forkserver(conn: Connection) -> None:
    """Count this pool out; stop the fork server asyncconc started once none uses it.

    A server that something else started (the program's own forkserver
    processes) is left running.
    """
    global _forkserver_users, _forkserver_ours
    if not conn.holds_forkserver:
        return
    conn.holds_forkserver = False
    _forkserver_users -= 1
    if _forkserver_users == 0 and _forkserver_ours:
        import multiprocessing.forkserver

        _forkserver_ours = False
        multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
