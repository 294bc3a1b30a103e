"""Where one request's time went: the function's own CPU, and the wall time spent in each backend
(the time at least one call to it was under way: calls that overlap count once).

The answer carries it as a ``Server-Timing`` header (W3C Server Timing), so ``curl -v`` shows
whether a slow answer was Kubernetes, the metrics backend or the function itself, and
``make bench`` reads it. ``cpu`` is the request thread's CPU time (``time.thread_time``): time
the thread spent blocked on a socket, or waiting for the GIL, is not in it; the CPU of reads
run beside it (``background``) is added, so ``cpu`` stays the request's whole own CPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, copy_context
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")


@dataclass
class RequestTiming:
    started_wall: float = field(default_factory=time.perf_counter)
    started_cpu: float = field(default_factory=time.thread_time)
    calls: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # backend -> (start, end) of each call
    background_cpu: float = 0.0  # CPU seconds of the reads run beside the request thread
    lock: threading.Lock = field(default_factory=threading.Lock)  # those reads add from their threads

    def add(self, backend: str, started: float, ended: float) -> None:
        with self.lock:
            self.calls.setdefault(backend, []).append((started, ended))

    def upstream_seconds(self) -> dict[str, float]:
        """Per backend, the time at least one call to it was under way: calls that overlap (the
        queries side by side, the state read beside the pods') count once."""
        with self.lock:
            calls = {backend: sorted(spans) for backend, spans in self.calls.items()}
        busy = {}
        for backend, spans in calls.items():
            total, reached = 0.0, float("-inf")
            for started, ended in spans:
                total += max(0.0, ended - max(started, reached))
                reached = max(reached, ended)
            busy[backend] = total
        return busy

    def add_cpu(self, seconds: float) -> None:
        with self.lock:
            self.background_cpu += seconds

    def server_timing(self) -> str:
        """``total``, ``cpu`` and one entry per backend, in milliseconds."""
        entries = [
            f"total;dur={(time.perf_counter() - self.started_wall) * 1000:.1f}",
            f"cpu;dur={(time.thread_time() - self.started_cpu + self.background_cpu) * 1000:.1f}",
        ]
        entries += [f"{backend};dur={seconds * 1000:.1f}" for backend, seconds in sorted(self.upstream_seconds().items())]
        return ", ".join(entries)


_current: ContextVar[RequestTiming | None] = ContextVar("rebalancer_request_timing", default=None)


@contextmanager
def timed_request() -> Iterator[RequestTiming]:
    """Collect the timing of the request handled in this context (thread)."""
    timing = RequestTiming()
    token = _current.set(timing)
    try:
        yield timing
    finally:
        _current.reset(token)


def carried(work: Callable[[], T]) -> Callable[[], T]:
    """``work``, to run on another thread in this request's context: the backends it calls add
    to this request's timing, and so does its CPU."""
    context = copy_context()

    def run() -> T:
        started = time.thread_time()
        try:
            return context.run(work)
        finally:
            timing = context.get(_current)
            if timing is not None:
                timing.add_cpu(time.thread_time() - started)

    return run


def timed(adapter: T, backend: str) -> T:
    """``adapter``, with every method call adding its wall time to the current request's timing
    under ``backend``; outside a request the calls only pass through. Typed as the adapter
    itself, so what receives it is checked against the adapter's own methods."""
    return cast(T, _TimedBackend(adapter, backend))


class _TimedBackend:
    def __init__(self, adapter: Any, backend: str) -> None:
        self._adapter, self._backend = adapter, backend

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._adapter, name)
        if not callable(attribute):
            return attribute
        return self._timed(attribute)

    def _timed(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            timing = _current.get()
            started = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                if timing is not None:
                    timing.add(self._backend, started, time.perf_counter())

        return call
