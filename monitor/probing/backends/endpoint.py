"""One OpenAI-compatible server, as a careful client sees it.

Every failure becomes a `BackendError` with a kind, so the prober records it as a measurement
error and the judge reports ERROR: an endpoint that is down must never look like a model that
forgot. Only transient failures (connection refused or reset, timeouts, 429 and 5xx) are retried,
with jittered exponential backoff; a 4xx answer is the same on every try. All requests to one
base URL with the same bound share it, however many backends (versions, threads) point at it:
`concurrency` per backend (one run), and `shared` for them all (the monitor gives `endpoint_runs`
× `concurrency`, so runs at once never starve each other and the server's load stays bounded;
models on one server with different `concurrency` each have their own shared bound).
The API key goes into the Authorization header and nowhere else: not into errors, logs or `repr`.

Every request is bounded in time and memory:

- `timeout_s` is one try's deadline, from connecting to the answer's last byte, whatever the
  server does (`deadline`: httpx's own timeouts are per read, so a server trickling its headers
  would never time out). A stop of the monitor ends a try in flight and the wait before the
  next (`Stopping`, never retried).
- An answer is read as a stream and abandoned past `max_bytes`, and the answers of every request
  to one base URL share a byte `budget`, held from before the body is read until it is parsed:
  memory is bounded per server, not per request in flight.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import Context, copy_context
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, ClassVar, TypeVar

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from monitor.errors import BackendError, TransientError
from monitor.probing.backends.budget import Budget
from monitor.probing.backends.deadline import DeadlineTransport, environment_proxy, pause, within
from monitor.vocabulary import ErrorKind

T = TypeVar("T")
R = TypeVar("R")
Signer = Callable[[bytes], dict[str, str]]

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_STATUS_KIND = {401: ErrorKind.AUTH, 403: ErrorKind.AUTH, 404: ErrorKind.NOT_FOUND}
_EXCERPT = 300
PER_PROMPT = 1 << 20  # vLLM echoes the log-probabilities of a 2048-token prompt in 545 KB
MAX_BYTES = 16 * PER_PROMPT  # the largest answer read: an echoed batch of 16 prompts, with room
BUDGET = 32 << 20  # bytes of answers held at once per server; parsed, they take about 5 times that


@dataclass(frozen=True)
class Answer:
    """What a server answered, read whole within the bounds."""

    status_code: int
    url: str
    content: bytes | bytearray  # read into one growing buffer: no second copy of a large answer

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def excerpt(self) -> str:
        return self.content[:_EXCERPT].decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass(frozen=True)
class Request:
    """One try's request, as sent (a webhook's signature is made afresh for each try)."""

    method: str
    url: str
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.method} {self.url}"


Parse = Callable[[Request, Answer], R]


class Endpoint:
    """A base URL such as http://vllm:8000/v1, with its own shared concurrency bound (`shared`,
    default `concurrency`) and, per instance, at most `concurrency` requests in flight."""

    _limits: ClassVar[dict[tuple[str, int], threading.BoundedSemaphore]] = {}
    _budgets: ClassVar[dict[tuple[str, int], Budget]] = {}
    _limits_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 max_retries: int = 3, concurrency: int = 4, backoff_s: float = 0.5,
                 max_bytes: int = MAX_BYTES, shared: int | None = None, budget_bytes: int = BUDGET) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = self._new_client()
        self._client_lock = threading.Lock()
        bound = max(shared or concurrency, concurrency)
        with self._limits_lock:
            self._slots = self._limits.setdefault((self.base_url, bound), threading.BoundedSemaphore(bound))
            self._budget = self._budgets.setdefault((self.base_url, budget_bytes), Budget(budget_bytes))

    def __repr__(self) -> str:
        return f"Endpoint({self.base_url!r}, concurrency={self.concurrency})"

    @property
    def root(self) -> str:
        """The server root, where vLLM and llama.cpp put their non-OpenAI routes."""
        return self.base_url.removesuffix("/v1")

    def close(self) -> None:
        """Release pooled connections; a later request opens new ones (the monitor reuses a
        backend across suites, and the runner closes it after each)."""
        self._client.close()

    def _new_client(self) -> httpx.Client:
        transport = DeadlineTransport(self.concurrency, environment_proxy(self.base_url))
        return httpx.Client(transport=transport, timeout=self._timeout, headers=self._headers)

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client.is_closed:
                self._client = self._new_client()
            return self._client

    # -- requests -------------------------------------------------------------------------

    def post(self, path: str, payload: dict[str, Any], *, root: bool = False) -> dict[str, Any]:
        return self._tried("POST", path, payload, root, _json_object)

    def get(self, path: str, *, root: bool = False) -> dict[str, Any]:
        return self._tried("GET", path, None, root, _json_object)

    def post_text(self, path: str, payload: Any, sign: Signer | None = None) -> str:
        """For routes that answer in plain text (vLLM's LoRA loading, Alertmanager, webhooks).
        `sign` gives the headers for the exact bytes sent (a webhook's signature), per try."""
        return self._tried("POST", path, payload, False, _text, sign)

    def map(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`call` on every item, at most `concurrency` at a time, each in a copy of the caller's
        context (a worker thread would otherwise miss the monitor's stop); the first error wins."""
        if len(items) <= 1:
            return [call(item) for item in items]
        contexts = [copy_context() for _ in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(_run_in, contexts, repeat(call), items))

    def _tried(self, method: str, path: str, payload: Any, root: bool, parse: Parse[R],
               sign: Signer | None = None) -> R:
        def once() -> R:
            request = self._request(method, path, payload, root, sign)
            return self._send(request, parse)

        return self._with_retries(once)

    def _with_retries(self, send: Callable[[], R]) -> R:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential_jitter(initial=self.backoff_s, max=30.0),
            sleep=pause,
            reraise=True,
        )
        try:
            return retrying(send)
        except TransientError as exc:
            raise BackendError(f"{exc} (gave up after {self.max_retries + 1} tries)",
                               kind=exc.kind) from exc

    def _request(self, method: str, path: str, payload: Any, root: bool, sign: Signer | None) -> Request:
        url = f"{self.root if root else self.base_url}{path}"
        if payload is None:
            return Request(method, url)
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if sign is not None:
            headers.update(sign(body))
        return Request(method, url, body, headers)

    def _send(self, request: Request, parse: Parse[R]) -> R:
        """One try: a slot of the server's, then connect, send, and read and parse the answer, all
        within `timeout_s`."""
        with self._slots, within(self.timeout_s), _as_backend_errors(request, self.timeout_s):
            stream = self._http().stream(request.method, request.url, content=request.body,
                                         headers=request.headers)
            with stream as response:
                return self._answered(request, response, parse)

    def _answered(self, request: Request, response: httpx.Response, parse: Parse[R]) -> R:
        with self._budget.held(self._expected_size(request, response)):
            answer = self._read(request, response)
            _check_status(request, answer)
            return parse(request, answer)

    def _expected_size(self, request: Request, response: httpx.Response) -> int:
        """What the answer will hold once decoded: its Content-Length where nothing is encoded
        (an answer declared over the cap is refused unread), else the cap."""
        declared = response.headers.get("Content-Length", "")
        if not declared.isdigit() or "Content-Encoding" in response.headers:
            return self.max_bytes
        if int(declared) > self.max_bytes:
            raise self._too_big(request)
        return int(declared)

    def _read(self, request: Request, response: httpx.Response) -> Answer:
        content = bytearray()
        for chunk in response.iter_bytes():
            content += chunk
            if len(content) > self.max_bytes:
                raise self._too_big(request)
        return Answer(response.status_code, str(response.url), content)

    def _too_big(self, request: Request) -> BackendError:
        return BackendError(f"{request}: the answer is over {self.max_bytes:,} bytes; it was abandoned",
                            kind=ErrorKind.INVALID_RESPONSE)


def _run_in(context: Context, call: Callable[[T], R], item: T) -> R:
    return context.run(call, item)


@contextmanager
def _as_backend_errors(request: Request, seconds: float) -> Iterator[None]:
    """A timeout (of one operation, of the whole try, or of the wait for the byte budget) and a
    connection that failed are worth another try."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise TransientError(f"{request}: no whole answer within {seconds:g} s ({type(exc).__name__})",
                             kind=ErrorKind.TIMEOUT) from exc
    except httpx.TransportError as exc:
        message = f"{request}: cannot reach the server ({exc})"
        raise TransientError(message, kind=ErrorKind.UNREACHABLE) from exc


def _check_status(request: Request, response: Answer) -> None:
    excerpt = response.excerpt()
    if response.status_code in _TRANSIENT_STATUS:
        raise TransientError(f"{request}: HTTP {response.status_code}: {excerpt}", kind=ErrorKind.SERVER)
    if response.status_code >= 400:
        kind = _STATUS_KIND.get(response.status_code, ErrorKind.REJECTED)
        raise BackendError(f"{request}: HTTP {response.status_code}: {excerpt}", kind=kind)


def _json_object(request: Request, response: Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, RecursionError) as exc:
        message = f"{request.method} {response.url}: the answer is not JSON: {response.excerpt()!r}"
        raise BackendError(message, kind=ErrorKind.INVALID_RESPONSE) from exc
    if not isinstance(body, dict):
        message = f"{request.method} {response.url}: expected a JSON object, got {response.excerpt()!r}"
        raise BackendError(message, kind=ErrorKind.INVALID_RESPONSE)
    return body


def _text(request: Request, response: Answer) -> str:
    return response.text
