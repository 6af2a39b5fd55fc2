"""What the fault matrix watches of a monitor while a fault holds: whether it still answers
`/healthz`, and how long it takes to stop on SIGTERM."""

from __future__ import annotations

import subprocess
import threading
import time
import urllib.request


class HealthWatch:
    """Asks every monitor's /healthz twice a second from when a fault is injected until the stop;
    counts the asks that got no 200 within 2 s from a monitor that had answered before."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.unanswered = 0
        self._answered: set[int] = set()  # a monitor still starting is not one that stopped answering
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._ask, name="health-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def forget(self, port: int) -> None:
        """A monitor the fault itself stops: no longer asked. A new monitor given the same port
        (the kernel hands freed ports out again) is a monitor still starting, not a silent one."""
        if port in self.ports:
            self.ports.remove(port)
        self._answered.discard(port)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _ask(self) -> None:
        while not self._stop.wait(0.5):
            for port in list(self.ports):
                if _healthy(port):
                    self._answered.add(port)
                elif port in self._answered and port in self.ports:
                    # still watched after the ask: a monitor the fault itself killed is forgotten
                    # before the kill, so an ask that raced the kill is not counted against it
                    self.unanswered += 1


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2.0) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


def stopped_within(proc: subprocess.Popen[bytes], began: float, limit_s: float) -> float:
    try:
        proc.wait(timeout=max(limit_s - (time.monotonic() - began), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return round(time.monotonic() - began, 1)
