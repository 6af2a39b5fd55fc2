"""The Ray executor: in-process probe runs and retraining on a Ray cluster's workers.

With `executor: {kind: ray}` a run of an in-process model is a Ray actor that asks for the model's
`resources`, loads the version once and answers the prober chunk by chunk; a recovery retraining
is a Ray task. The monitor keeps the schedule, the claims, the judging and the database.

Results come back through Ray, and the monitor writes them, rather than each worker writing its
own: workers then need no database credentials and no route to the database (SQLite still
works, and the spool still keeps what a database outage could not take), and every chunk's
results reach the monitor the moment they are measured. A worker that dies mid-run costs only
the chunk it was measuring, which is measured again on a fresh worker (scoring has no side
effects, so that retry is always safe), up to `executor.max_retries` times per run; after that
the chunk's items are recorded as `worker_lost` errors and the judge returns ERROR, never FAIL.
A retraining writes its weights whole or not at all, so Ray retries a lost one from the start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from monitor.errors import BackendError, MissingExtra, Stopping
from monitor.policy.schema import Config, ExecutorSpec
from monitor.probing.backends.base import (
    Backend,
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    OpeningRequest,
    RollingResult,
)
from monitor.vocabulary import ErrorKind

log = logging.getLogger("forgetmenot.ray")
T = TypeVar("T")
_connecting = threading.Lock()
_MEASURES = frozenset({"loglikelihood", "loglikelihood_rolling", "generate", "opening_logprobs"})
_WAIT_S = 1.0  # how soon a task being waited on notices a stop


def connect(spec: ExecutorSpec) -> Any:
    """The `ray` module, connected to the policy's cluster once per process."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtra("ray", "ray") from exc
    with _connecting:
        if not ray.is_initialized():
            try:
                ray.init(address=spec.address, namespace=spec.namespace, log_to_driver=False,
                         logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = spec.address or "RAY_ADDRESS (or a local Ray)"
                raise BackendError(f"Ray at {where} could not be reached: {exc}",
                                   kind=ErrorKind.UNREACHABLE) from exc
    return ray


def resources(config: Config, model: str) -> dict[str, Any]:
    """The model's `resources` as Ray's options name them."""
    wanted = config.models[model].resources
    found: dict[str, Any] = {"num_cpus": wanted.num_cpus, "num_gpus": wanted.num_gpus}
    if wanted.memory:
        found["memory"] = int(wanted.memory)
    if wanted.custom:
        found["resources"] = dict(wanted.custom)
    return found


def on_worker(config: Config) -> Config:
    """The policy as a worker uses it: measured where it runs, not dispatched again."""
    return config.model_copy(update={"executor": ExecutorSpec()})


class ProbeWorker:
    """The actor: one loaded version. A version that will not load is reported by `describe`,
    so the monitor records the loader's own error rather than a dead actor's."""

    def __init__(self, config: Config, model: str, version: str) -> None:
        from monitor.probing.factory import backend_for

        self.backend: Backend | None = None
        self.failure: BackendError | None = None
        try:
            self.backend = backend_for(config, model, version)
        except BackendError as exc:
            self.failure = exc

    def describe(self) -> tuple[BackendInfo, int, int, str]:
        if self.backend is None:
            raise self.failure or BackendError("the version did not load", kind=ErrorKind.LOAD)
        return self.backend.info, self.backend.chunk_size, self.backend.batch_size, node_id()

    def measure(self, method: str, batch_size: int, payload: Sequence[Any]) -> Any:
        if self.backend is None or method not in _MEASURES:
            raise BackendError(f"cannot {method} here", kind=ErrorKind.RUNTIME)
        self.backend.batch_size = batch_size
        return getattr(self.backend, method)(payload)


class RemoteBackend:
    """A `Backend` whose model is a `ProbeWorker` on a Ray node with the model's resources."""

    def __init__(self, config: Config, model: str, version: str) -> None:
        self.config, self.model, self.version = config, model, version
        self.ray = connect(config.executor)
        self.retries_left = config.executor.max_retries
        self.actor: Any = None
        self.lost = ""
        self.node = ""  # the Ray node measuring, for the log and the tests
        self._info, self._chunk, self.batch_size = self._start()

    @property
    def info(self) -> BackendInfo:
        return self._info

    @property
    def chunk_size(self) -> int:
        return self._chunk

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[list[float]]:
        return list(self._measure("loglikelihood", requests))

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[RollingResult]:
        return list(self._measure("loglikelihood_rolling", texts))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[str]:
        return list(self._measure("generate", requests))

    def opening_logprobs(self, requests: Sequence[OpeningRequest]) -> list[list[float]]:
        return list(self._measure("opening_logprobs", requests))

    def close(self) -> None:
        """The actor goes, and its GPU with it."""
        if self.actor is not None:
            with suppress(Exception):
                self.ray.kill(self.actor)
            self.actor = None

    def _start(self) -> tuple[BackendInfo, int, int]:
        """A fresh actor, ready to measure; a BackendError if none is, within `start_timeout`."""
        ray = self.ray
        worker = ray.remote(ProbeWorker).options(max_restarts=0, max_task_retries=0,
                                                 **resources(self.config, self.model))
        actor = worker.remote(on_worker(self.config), self.model, self.version)
        timeout = self.config.executor.start_timeout.total_seconds()
        try:
            info, chunk, batch, self.node = ray.get(actor.describe.remote(), timeout=timeout)
        except Exception as exc:
            with suppress(Exception):
                ray.kill(actor)
            self.lost = f"{self.model}/{self.version} could not start on Ray: {_why(ray, exc, timeout)}"
            raise _as_backend_error(ray, exc, self.lost) from exc
        self.actor = actor
        log.info("%s/%s is measured on Ray node %s", self.model, self.version, self.node)
        return info, chunk, batch

    def _measure(self, method: str, payload: Sequence[Any]) -> Sequence[Any]:
        while True:
            if self.actor is None and self.lost:
                raise BackendError(self.lost, kind=ErrorKind.WORKER_LOST)
            if self.actor is None:  # closed, as a backend may be between runs: start another
                self._info, self._chunk, _ = self._start()
            try:
                answer: Sequence[Any] = self.ray.get(self.actor.measure.remote(method, self.batch_size,
                                                                               list(payload)))
                return answer
            except lost_errors(self.ray) as exc:
                self._replace(exc)
            except self.ray.exceptions.RayError as exc:  # the measurement raised, or Ray itself
                raise _as_backend_error(self.ray, exc, _first_line(exc)) from None

    def _replace(self, exc: BaseException) -> None:
        """The worker is gone: a fresh one takes the chunk, while this run has retries left."""
        self.close()
        if self.retries_left <= 0:
            self.lost = (f"the Ray worker measuring {self.model}/{self.version} was lost and "
                         f"max_retries ({self.config.executor.max_retries}) is spent: {_first_line(exc)}")
            raise BackendError(self.lost, kind=ErrorKind.WORKER_LOST)
        self.retries_left -= 1
        log.warning("the Ray worker measuring %s/%s was lost (%s); measuring its chunk again on a "
                    "fresh one", self.model, self.version, _first_line(exc))
        self._info, self._chunk, _ = self._start()


def call(config: Config, model: str, fn: Callable[..., T], *args: Any,
         stopping: Callable[[], bool] | None = None) -> T:
    """`fn(*args)` as a Ray task with the model's resources; cancelled if the monitor stops.
    Ray runs it again on another worker if its worker dies (`max_retries`)."""
    ray = connect(config.executor)
    task = ray.remote(fn).options(max_retries=config.executor.max_retries, retry_exceptions=False,
                                  **resources(config, model))
    ref = task.remote(*args)
    try:
        while not ray.wait([ref], timeout=_WAIT_S)[0]:
            if stopping is not None and stopping():
                ray.cancel(ref, force=True)
                raise Stopping("stop requested while a Ray task was running")
        result: T = ray.get(ref)
        return result
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise cause if isinstance(cause, Exception) else BackendError(str(exc)) from None
    except lost_errors(ray) as exc:
        raise BackendError(f"the Ray task for {model} was lost and max_retries "
                           f"({config.executor.max_retries}) is spent: {_first_line(exc)}",
                           kind=ErrorKind.WORKER_LOST) from exc


def node_id() -> str:
    """The Ray node this process runs on ("" outside Ray)."""
    import ray

    return str(ray.get_runtime_context().get_node_id()) if ray.is_initialized() else ""


def lost_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """What Ray raises when a worker, its node or an object it held is gone."""
    names = ("RayActorError", "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
             "LocalRayletDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _as_backend_error(ray: Any, exc: BaseException, message: str) -> BackendError:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BackendError):
        return cause
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, ray.exceptions.GetTimeoutError):
        return BackendError(message, kind=ErrorKind.TIMEOUT)
    if isinstance(exc, lost_errors(ray)):
        return BackendError(message, kind=ErrorKind.WORKER_LOST)
    return BackendError(message, kind=ErrorKind.RUNTIME)


def _why(ray: Any, exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ray.exceptions.GetTimeoutError):
        return (f"no node had its resources free within start_timeout ({timeout:.0f} s); "
                "see `ray status` for what the cluster has")
    cause = getattr(exc, "cause", None)
    return _first_line(cause if isinstance(cause, BaseException) else exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"[:300]
