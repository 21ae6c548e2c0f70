"""The one thread that runs the model, with two queues: interactive work (embedding an upload,
answering a click) always goes first, and heavy work (everything mode) runs one job at a time,
giving way to queued interactive work at every step and stopping when told to."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Stopped(Exception):
    """Heavy work stopped before its end: its client went away, or its time ran out."""


class HeavyJob:
    """What a heavy job's steps check: whether to stop (`cancel`, set when its client goes
    away) and its time budget, counted from its start."""

    def __init__(self, seconds: float) -> None:
        self.cancel = threading.Event()
        self.seconds = seconds
        self.started: float | None = None


class ModelWorker:
    """Model work on one thread, off the event loop, so the model never runs twice at once."""

    def __init__(self, name: str = "promptseg-model") -> None:
        self._cv = threading.Condition()
        self._interactive: deque = deque()
        self._heavy: deque = deque()
        self._heavy_running = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    # --- from the event loop ----------------------------------------------------------
    async def run(self, fn: Callable[..., Any], *args) -> Any:
        """`fn(*args)` on the model thread, before any heavy step that is waiting."""
        return await asyncio.wrap_future(self._submit(self._interactive, fn, args))

    async def run_heavy(self, fn: Callable[[Callable[[], None]], Any], job: HeavyJob) -> Any:
        """`fn(step)` on the model thread after the heavy jobs before it. `fn` must call `step()`
        often: it runs the interactive work queued meanwhile, and raises Stopped when `job` is
        cancelled or over its time."""
        return await asyncio.wrap_future(self._submit(self._heavy, self._heavy_task, (fn, job)))

    @property
    def heavy_jobs(self) -> int:
        """Heavy jobs queued or running."""
        with self._cv:
            return len(self._heavy) + self._heavy_running

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # --- on the model thread ---------------------------------------------------------
    def _submit(self, queue: deque, fn, args) -> Future:
        future: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("the model worker is closed")
            queue.append((fn, args, future))
            self._cv.notify()
        return future

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not (self._interactive or self._heavy or self._closed):
                    self._cv.wait()
                if self._interactive:
                    task, heavy = self._interactive.popleft(), False
                elif self._heavy:
                    task, heavy = self._heavy.popleft(), True
                    self._heavy_running += 1
                else:
                    return
            try:
                _execute(*task)
            finally:
                if heavy:
                    with self._cv:
                        self._heavy_running -= 1

    def _heavy_task(self, fn, job: HeavyJob):
        job.started = time.monotonic()

        def step() -> None:
            self._serve_interactive()
            if job.cancel.is_set():
                raise Stopped("its client went away")
            if time.monotonic() - job.started > job.seconds:
                raise Stopped(f"it ran over its time budget of {job.seconds:g} s")

        step()
        return fn(step)

    def _serve_interactive(self) -> None:
        """Run the interactive work queued now (called between the steps of heavy work)."""
        while True:
            with self._cv:
                if not self._interactive:
                    return
                task = self._interactive.popleft()
            _execute(*task)


def _execute(fn, args, future: Future) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        future.set_result(fn(*args))
    except BaseException as exc:  # handed to the awaiting request
        future.set_exception(exc)
