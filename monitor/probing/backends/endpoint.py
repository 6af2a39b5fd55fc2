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

Every answer is bounded: it is read as a stream and abandoned past `max_bytes` (a 200 MB body
once took the monitor from 72 to 675 MB) or past the request's total deadline, `timeout_s` from
the first byte sent (httpx's timeout is per read, so a server trickling a byte a second ran 11 s
against a 3 s timeout).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import httpx
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from monitor.errors import BackendError, TransientError
from monitor.vocabulary import ErrorKind

T = TypeVar("T")
R = TypeVar("R")
Signer = Callable[[bytes], dict[str, str]]

_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_STATUS_KIND = {401: ErrorKind.AUTH, 403: ErrorKind.AUTH, 404: ErrorKind.NOT_FOUND}
_EXCERPT = 300
MAX_BYTES = 32 << 20  # the largest answer read: echo log-probabilities of a batch are well under 1 MB


@dataclass(frozen=True)
class Answer:
    """What a server answered, read whole within the bounds."""

    status_code: int
    url: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Endpoint:
    """A base URL such as http://vllm:8000/v1, with its own shared concurrency bound (`shared`,
    default `concurrency`) and, per instance, at most `concurrency` requests in flight."""

    _limits: ClassVar[dict[tuple[str, int], threading.BoundedSemaphore]] = {}
    _limits_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0,
                 max_retries: int = 3, concurrency: int = 4, backoff_s: float = 0.5,
                 max_bytes: int = MAX_BYTES, shared: int | None = None) -> None:
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
        return httpx.Client(timeout=self._timeout, headers=self._headers,
                            limits=httpx.Limits(max_connections=self.concurrency))

    def _http(self) -> httpx.Client:
        with self._client_lock:
            if self._client.is_closed:
                self._client = self._new_client()
            return self._client

    # -- requests -------------------------------------------------------------------------

    def post(self, path: str, payload: dict[str, Any], *, root: bool = False) -> dict[str, Any]:
        return self._with_retries(lambda: self._json("POST", path, payload, root))

    def get(self, path: str, *, root: bool = False) -> dict[str, Any]:
        return self._with_retries(lambda: self._json("GET", path, None, root))

    def post_text(self, path: str, payload: Any, sign: Signer | None = None) -> str:
        """For routes that answer in plain text (vLLM's LoRA loading, Alertmanager, webhooks).
        `sign` gives the headers for the exact bytes sent (a webhook's signature), per try."""
        return self._with_retries(lambda: self._send("POST", path, payload, False, sign).text)

    def map(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`call` on every item, at most `concurrency` at a time; the first error wins."""
        if len(items) <= 1:
            return [call(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(call, items))

    def _with_retries(self, send: Callable[[], R]) -> R:
        retrying = Retrying(
            retry=retry_if_exception_type(TransientError),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait_exponential_jitter(initial=self.backoff_s, max=30.0),
            reraise=True,
        )
        try:
            return retrying(send)
        except TransientError as exc:
            raise BackendError(f"{exc} (gave up after {self.max_retries + 1} tries)",
                               kind=exc.kind) from exc

    def _json(self, method: str, path: str, payload: dict[str, Any] | None, root: bool) -> dict[str, Any]:
        response = self._send(method, path, payload, root)
        excerpt = response.text[:_EXCERPT]
        try:
            body = response.json()
        except (ValueError, RecursionError) as exc:
            raise BackendError(f"{method} {response.url}: the answer is not JSON: {excerpt!r}",
                               kind=ErrorKind.INVALID_RESPONSE) from exc
        if not isinstance(body, dict):
            raise BackendError(f"{method} {response.url}: expected a JSON object, got {excerpt!r}",
                               kind=ErrorKind.INVALID_RESPONSE)
        return body

    def _send(self, method: str, path: str, payload: Any, root: bool, sign: Signer | None = None) -> Answer:
        url = f"{self.root if root else self.base_url}{path}"
        with self._slots:
            try:
                response = self._read(method, url, payload, sign)
            except httpx.TimeoutException as exc:
                raise TransientError(f"{method} {url}: timed out ({type(exc).__name__})",
                                     kind=ErrorKind.TIMEOUT) from exc
            except httpx.TransportError as exc:
                raise TransientError(f"{method} {url}: cannot reach the server ({exc})",
                                     kind=ErrorKind.UNREACHABLE) from exc
        _check_status(method, url, response)
        return response

    def _read(self, method: str, url: str, payload: Any, sign: Signer | None) -> Answer:
        deadline = time.monotonic() + self.timeout_s
        body = None if payload is None else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if sign is not None and body is not None:
            headers.update(sign(body))
        with self._http().stream(method, url, content=body, headers=headers) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise BackendError(f"{method} {url}: the answer is over {self.max_bytes:,} bytes; "
                                       "it was abandoned", kind=ErrorKind.INVALID_RESPONSE)
                if time.monotonic() > deadline:
                    raise TransientError(f"{method} {url}: no whole answer within {self.timeout_s:g} s",
                                         kind=ErrorKind.TIMEOUT)
                chunks.append(chunk)
            return Answer(response.status_code, str(response.url), b"".join(chunks))


def _check_status(method: str, url: str, response: Answer) -> None:
    excerpt = response.text[:_EXCERPT]
    if response.status_code in _TRANSIENT_STATUS:
        raise TransientError(f"{method} {url}: HTTP {response.status_code}: {excerpt}", kind=ErrorKind.SERVER)
    if response.status_code >= 400:
        kind = _STATUS_KIND.get(response.status_code, ErrorKind.REJECTED)
        raise BackendError(f"{method} {url}: HTTP {response.status_code}: {excerpt}", kind=kind)
