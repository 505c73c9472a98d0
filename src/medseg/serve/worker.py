"""One model, one worker thread: segmentation jobs queue for it instead of running N copies of the model.

The web server's handlers submit jobs and await them; the event loop stays free, so the page, health checks and
downloads are answered while the model works. A full queue is refused at once (:class:`Busy`), and a job that
waited too long to start is dropped (:class:`Busy` too): the handler answers 503 with a retry hint.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Busy(Exception):
    """The model's queue is full, or a job waited longer than the limit to start.

    Attributes:
        retry_after: seconds after which a retry is likely to be served.
    """

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelWorker:
    """A daemon thread running submitted callables one at a time, in order.

    Args:
        max_queue: jobs that may wait (beyond the running one) before :meth:`submit` refuses.
        max_wait_s: a job not started within this many seconds is dropped with :class:`Busy`.
    """

    def __init__(self, *, max_queue: int = 64, max_wait_s: float = 120.0) -> None:
        self.max_queue, self.max_wait_s = max_queue, max_wait_s
        self._jobs: queue.Queue[tuple[float, Callable[[], Any], Future] | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._seconds_per_job = 1.0  # running mean, for the retry hint
        self._thread = threading.Thread(target=self._run, name="medseg-model", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished."""
        return self._pending

    def retry_after(self) -> int:
        """Seconds until the queue as it is now has likely drained."""
        return max(1, int(self._pending * self._seconds_per_job + 0.5))

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Queue ``fn``; its result (or exception) arrives in the returned future.

        Raises:
            Busy: ``max_queue`` jobs are already waiting.
        """
        with self._lock:
            if self._pending > self.max_queue:
                raise Busy(f"the model has {self._pending} images queued; retry later", self.retry_after())
            self._pending += 1
        fut: Future = Future()
        self._jobs.put((time.monotonic(), fn, fut))
        return fut

    def close(self) -> None:
        """Stop after the queued jobs."""
        self._jobs.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            queued_at, fn, fut = item
            try:
                if time.monotonic() - queued_at > self.max_wait_s:
                    fut.set_exception(Busy(f"waited more than {self.max_wait_s:.0f} s for the model",
                                           self.retry_after()))
                    continue
                if not fut.set_running_or_notify_cancel():
                    continue
                t0 = time.perf_counter()
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # handed to the waiting request, which answers for it
                    fut.set_exception(exc)
                self._seconds_per_job = 0.8 * self._seconds_per_job + 0.2 * (time.perf_counter() - t0)
            finally:
                with self._lock:
                    self._pending -= 1
