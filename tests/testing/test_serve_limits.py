"""``serve``'s connection cap: a flood is refused, a normal client still served."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from asyncconc.testing import serve_files


async def test_connections_over_the_cap_are_closed_others_served(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    async with serve_files(tmp_path, faults=False, max_connections=5) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # Without the cap this socket would wait for the idle timeout (75 s).
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        for _, w in held:
            w.close()
            await w.wait_closed()
        status = 0
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # slots free up as the server sees the closes
                try:
                    async with session.get(server.url("a")) as r:
                        status = r.status
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
        assert status == 200
