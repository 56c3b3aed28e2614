"""Two QMP steps every action shares (the run state, a quiet close), apart from the start action's module
so that a stop does not import the launch machinery (argv builder, images, launch) it never uses."""

from __future__ import annotations

import asyncio
import contextlib

from reconciler.qmp import QmpSession


async def query_status(session: QmpSession, timeout: float) -> str:
    result = await session.execute("query-status", timeout=timeout)
    return str(result.get("status", "")) if isinstance(result, dict) else ""


async def close_quietly(session: QmpSession) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await session.close()
