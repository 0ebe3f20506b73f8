"""Account: 100 deposits of 1 at once, with and without a lock.

The lesson's deposit reads the balance, "processes" for 10 ms, then writes
the new balance. Run by 100 threads at once, most of them read the same old
balance, so the account ends far below 100. The same happens with
coroutines: each ``await`` in the middle lets the other 99 read too. A lock
held across read-process-write fixes both, at the price of doing the 100
deposits one after another (100 x 10 ms).

Run: ``python scenarios/account.py [--deposits N] [--processing SECONDS]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from collections.abc import Callable, Sequence

import asyncconc
from asyncconc import Account, UnsafeAccount
from asyncconc.lessons._table import Timing, format_rows

__all__ = ["main", "measure"]


class ThreadAccount:
    """The lesson's account for threads, with or without a threading.Lock."""

    def __init__(self, *, locked: bool, processing: float) -> None:
        self.balance = 0
        self._lock = threading.Lock() if locked else None
        self._processing = processing

    def deposit(self, amount: int) -> None:
        if self._lock is None:
            self._deposit(amount)
        else:
            with self._lock:
                self._deposit(amount)

    def _deposit(self, amount: int) -> None:
        new_balance = self.balance + amount
        time.sleep(self._processing)
        self.balance = new_balance


def with_threads(deposits: int, processing: float, *, locked: bool) -> int:
    account = ThreadAccount(locked=locked, processing=processing)
    threads = [threading.Thread(target=account.deposit, args=(1,)) for _ in range(deposits)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return account.balance


async def with_coroutines(deposits: int, processing: float, *, locked: bool) -> int:
    async def pause() -> None:
        await asyncio.sleep(processing)

    account: Account | UnsafeAccount
    account = Account(processing=pause) if locked else UnsafeAccount(processing=pause)
    async with asyncio.TaskGroup() as tg:
        for _ in range(deposits):
            tg.create_task(account.deposit(1))
    return int(account.balance)


def measure(deposits: int = 100, processing: float = 0.01) -> list[Timing]:
    """Run the four variants; the rows."""

    def threads(locked: bool) -> int:
        return with_threads(deposits, processing, locked=locked)

    def coroutines(locked: bool) -> int:
        return asyncconc.run(with_coroutines(deposits, processing, locked=locked))

    variants: list[tuple[str, Callable[[bool], int], bool]] = [
        ("threads, no lock", threads, False),
        ("threads + threading.Lock", threads, True),
        ("coroutines, no lock", coroutines, False),
        ("coroutines + asyncio.Lock", coroutines, True),
    ]
    rows: list[Timing] = []
    for name, variant, locked in variants:
        start = time.perf_counter()
        balance = variant(locked)
        seconds = time.perf_counter() - start
        verdict = "right" if balance == deposits else f"WRONG: lost {deposits - balance}"
        rows.append(Timing(name, seconds, f"balance {balance} ({verdict})"))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deposits", type=int, default=100, help="deposits of 1 (default 100)")
    parser.add_argument(
        "--processing", type=float, default=0.01, help="seconds between read and write (0.01)"
    )
    args = parser.parse_args(argv)
    if args.deposits < 1 or args.processing < 0:
        parser.error("need --deposits >= 1 and --processing >= 0")
    print(f"{args.deposits} deposits of 1 at once, {args.processing * 1000:g} ms each:")
    rows = measure(args.deposits, args.processing)
    print("\n".join(format_rows(rows)))
    print(
        "Without a lock every deposit reads the balance, waits, and writes back what it "
        "read plus 1: the deposits that read while others were waiting overwrite each "
        "other. Coroutines switch only at 'await', but the wait in the middle is one. "
        "With a lock the read-wait-write steps take turns: the balance is right and the "
        "deposits run one after another."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
