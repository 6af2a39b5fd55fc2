"""Bytes of answers held at once, per server: what bounds the monitor's memory.

A cap per answer bounds one answer; it does not bound many requests in flight each holding a
large one, and the objects parsed from it (about five times its size for echoed
log-probabilities). A `Budget` is shared by every request to one base URL: before an answer's
body is read, its request reserves the answer's size (its Content-Length, or the cap per answer
when the server does not say) and holds it until the answer is parsed. A request that does not
fit waits, within its deadline, for others to give bytes back; one larger than the whole budget
is read alone. A request reserves all it needs before reading anything, so none holds part of the
budget while waiting for more: requests cannot wait on each other for ever. Parsing holds the
GIL, so answers parsed one after another cost no time against answers parsed side by side.

Bytes given back are also given back to the OS where the C library is glibc: an answer is read
and parsed by whichever worker thread sent its request, glibc keeps what a thread frees in that
thread's own arena, and the process would otherwise grow to a large answer per thread that ever
parsed one, whatever the budget.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from monitor.probing.backends.deadline import sliced

TRIM_FROM = 1 << 20  # answers this large are worth handing their memory back for


class Budget:
    def __init__(self, total: int) -> None:
        self.total = total
        self.used = 0
        self._changed = threading.Condition()

    @contextmanager
    def held(self, size: int) -> Iterator[int]:
        """Reserve `size` bytes (at most the whole budget) for as long as the block runs."""
        share = min(size, self.total)
        self._take(share)
        try:
            yield share
        finally:
            self._give(share)

    def _take(self, share: int) -> None:
        with self._changed:
            while self.used + share > self.total:
                self._changed.wait(sliced())
            self.used += share

    def _give(self, share: int) -> None:
        with self._changed:
            self.used -= share
            self._changed.notify_all()
        trim = _malloc_trim()
        if share >= TRIM_FROM and trim is not None:
            trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's `malloc_trim`, or None under another C library (musl, macOS), which has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
