"""Reads that run beside the Kubernetes read: the metrics queries (and a group read at the
brokers) do not need the pods, so they are sent first and answered while the pods are listed.
An invocation then waits for the slower of the two, not their sum. The Kubernetes adapter sends
its ReplicaSet and autoscaler lists here too, beside the pod list.

One small pool per process, made on first use: functions-framework builds the app in gunicorn's
arbiter and forks the worker, and threads started before a fork do not exist after it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from rebalancer.timing import carried

T = TypeVar("T")


class BackgroundReads:
    """Submit a read; its ``Future`` raises what the read raised, where the caller waits for it."""

    def __init__(self, workers: int = 8) -> None:
        self._workers = workers
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = 0

    def submit(self, read: Callable[[], T]) -> Future[T]:
        # The request's timing (Server-Timing) goes with the read: its wall time and its CPU count.
        return self._executor().submit(carried(read))

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="rebalancer-read")
                self._pid = os.getpid()
            return self._pool
