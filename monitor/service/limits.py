"""How many probe runs one monitor has in flight, in all and per shared resource.

Every watched version has a scheduler thread of its own, so a cycle over N versions can take about
as long as the slowest of them. What bounds them is what they share: a served endpoint (one vLLM
hosting many adapters answers only so many runs at once before each gets slower) and, for models
run in this process, a device (two runs on one GPU or on the same CPU cores would only take turns
while holding two models' memory). A run holds one slot of its own resource and one of the
monitor-wide `max_runs`; anything else it could wait on is per resource, so a dead endpoint
fills its own slots and no other's.

Slots are taken in one order (the resource's, then the monitor-wide one), so two runs never
hold one each while waiting for the other's; a wait gives up as soon as the monitor stops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, cast

from monitor.errors import Stopping
from monitor.policy.schema import Config
from monitor.probing.backends.base import Backend

_POLL_S = 0.5  # how soon a waiting run notices a stop


class Limits:
    def __init__(self, config: Config, stopping: threading.Event) -> None:
        self.config = config
        self.stopping = stopping
        self.total = threading.BoundedSemaphore(config.executor.max_runs)
        self._named: dict[str, threading.BoundedSemaphore] = {}
        self._making = threading.Lock()

    def resource(self, model: str) -> tuple[str, int] | None:
        """The shared resource a run of `model` holds a slot of, and how many slots it has: its
        endpoint when served, its device when in this process; none when Ray places the run."""
        backend = self.config.models[model].backend
        executor = self.config.executor
        if backend.kind == "openai":
            return f"endpoint {(backend.base_url or '').rstrip('/')}", executor.endpoint_runs
        if executor.kind == "ray":
            return None  # Ray queues it until a node has the model's resources free
        device = "cuda:0" if backend.device == "cuda" else backend.device  # one GPU, one key
        return f"device {device}", executor.device_runs

    @contextmanager
    def slot(self, model: str) -> Iterator[None]:
        """Hold a run's slots; raises `Stopping` if the monitor stops while it waits."""
        wanted = self.resource(model)
        own = self._semaphore(*wanted) if wanted else None
        with self._holding(own), self._holding(self.total):
            yield

    @contextmanager
    def device(self, model: str) -> Iterator[None]:
        """The slot local retraining holds: it needs the device a probe run would use."""
        wanted = self.resource(model)
        if wanted is None or not wanted[0].startswith("device"):
            yield
            return
        with self._holding(self._semaphore(*wanted)):
            yield

    def held(self, model: str, load: Callable[[], Backend]) -> Backend:
        """A backend loaded outside a cycle (re-elicitation's), holding a run slot of `model` from
        before it loads until it is closed: a model in memory always holds its slot."""
        slot = ExitStack()
        slot.enter_context(self.slot(model))
        try:
            backend = load()
        except BaseException:
            slot.close()
            raise
        return cast(Backend, _Holding(backend, slot))

    def _semaphore(self, name: str, slots: int) -> threading.BoundedSemaphore:
        with self._making:
            return self._named.setdefault(name, threading.BoundedSemaphore(slots))

    @contextmanager
    def _holding(self, semaphore: threading.BoundedSemaphore | None) -> Iterator[None]:
        if semaphore is None:
            yield
            return
        while not semaphore.acquire(timeout=_POLL_S):
            if self.stopping.is_set():
                raise Stopping("stop requested while waiting for a free slot")
        try:
            yield
        finally:
            semaphore.release()


class _Holding:
    """A backend and the slot it holds, released when it is closed."""

    def __init__(self, backend: Backend, slot: ExitStack) -> None:
        self._backend, self._slot = backend, slot

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def close(self) -> None:
        try:
            self._backend.close()
        finally:
            self._slot.close()
