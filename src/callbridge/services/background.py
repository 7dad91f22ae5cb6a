"""A worker the hub's lifespan owns: one task running ``run()``, started and cancelled with the app."""

from __future__ import annotations

import asyncio
import contextlib


class BackgroundWorker:
    task_name = "background-worker"
    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=self.task_name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
