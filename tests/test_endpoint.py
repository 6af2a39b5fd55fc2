"""The openai backend against servers that misbehave on purpose: down, flaky, slow, garbage.

Real servers (vLLM, llama-cpp-python) are in test_served.py; no real server can be made to
answer garbage on demand, so these use a small scripted HTTP server on loopback.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import BackendError, ConfigError
from monitor.probing.backends.answers import prompt_logprobs
from monitor.probing.backends.base import GenerationRequest, LoglikelihoodRequest
from monitor.probing.backends.endpoint import Endpoint
from monitor.probing.backends.openai import OpenAIBackend
from monitor.probing.backends.tokens import ServerTokenizer
from monitor.store import Store
from monitor.testing.faults import FaultProxy
from monitor.testing.stack import free_port
from tests.conftest import PROBES

Reply = tuple[int, Any]  # (status, JSON body or raw bytes)


class Scripted:
    """Answers each POST with the next scripted reply and records what it was sent."""

    def __init__(self, replies: list[Reply] | Callable[[dict[str, Any]], Reply]) -> None:
        self.replies = replies
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                script.received.append((dict(self.headers), body))
                status, payload = script.next(body)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                raw = json.dumps({"data": [{"id": "m", "max_model_len": 2048}]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, body: dict[str, Any]) -> Reply:
        if callable(self.replies):
            return self.replies(body)
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


@pytest.fixture()
def scripted() -> Iterator[Callable[..., Scripted]]:
    servers: list[Scripted] = []

    def make(replies: Any) -> Scripted:
        servers.append(Scripted(replies))
        return servers[-1]

    yield make
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


def chat(text: str) -> Reply:
    return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def backend(url: str, **kwargs: Any) -> OpenAIBackend:
    endpoint = Endpoint(url, backoff_s=0.01, **kwargs)
    return OpenAIBackend(endpoint, ServerTokenizer(endpoint, "m", prefix_token=0), model="m")


ASK = [GenerationRequest("2+2?", max_new_tokens=4)]


def test_down_endpoint_is_an_unreachable_error_after_retries() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError) as caught:
        backend(url, max_retries=2).generate(ASK)
    assert caught.value.kind == "unreachable" and "gave up after 3 tries" in str(caught.value)


def test_transient_errors_are_retried_then_succeed(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(503, {"error": "warming up"}), (429, {"error": "slow down"}), chat("4")])
    assert backend(server.url, max_retries=3).generate(ASK) == ["4"]
    assert len(server.received) == 3


def test_client_errors_are_not_retried_and_say_what_the_server_said(
        scripted: Callable[..., Scripted]) -> None:
    server = scripted([(404, {"error": "model 'm' does not exist"})])
    with pytest.raises(BackendError) as caught:
        backend(server.url, max_retries=3).generate(ASK)
    assert caught.value.kind == "not_found" and "does not exist" in str(caught.value)
    assert len(server.received) == 1


def test_slow_server_times_out(scripted: Callable[..., Scripted]) -> None:
    import time

    def slow(body: dict[str, Any]) -> Reply:
        time.sleep(1.0)
        return chat("late")

    server = scripted(slow)
    with pytest.raises(BackendError) as caught:
        backend(server.url, timeout_s=0.2, max_retries=0).generate(ASK)
    assert caught.value.kind == "timeout"


@pytest.mark.parametrize(("reply", "expected"), [
    ((200, b"<html>502 Bad Gateway</html>"), "not JSON"),
    ((200, {"choices": []}), "got 0 choices back"),
    ((200, {"choices": [{"index": 0, "message": {"content": None}}]}), "no text content"),
    ((200, [1, 2, 3]), "expected a JSON object"),
])
def test_garbage_is_an_invalid_response(scripted: Callable[..., Scripted], reply: Reply,
                                        expected: str) -> None:
    server = scripted([reply])
    with pytest.raises(BackendError) as caught:
        backend(server.url).generate(ASK)
    assert caught.value.kind == "invalid_response" and expected in str(caught.value)


# Chat answers of the wrong shape, each with words its error must carry.
WRONG_CHAT_SHAPES = {
    "message-a-string": ({"choices": [{"message": "x"}]}, "a chat completion has no message"),
    "message-null": ({"choices": [{"index": 0, "message": None}]}, "a chat completion has no message"),
    "choice-a-string": ({"choices": ["x"]}, "choice 0 is not an object"),
    "choice-null": ({"choices": [None]}, "choice 0 is not an object"),
    "content-a-list": ({"choices": [{"index": 0, "message": {"content": ["4"]}}]}, "no text content"),
    "content-a-number": ({"choices": [{"index": 0, "message": {"content": 4}}]}, "no text content"),
}


@pytest.mark.parametrize(("answer", "says"), list(WRONG_CHAT_SHAPES.values()), ids=list(WRONG_CHAT_SHAPES))
def test_a_chat_answer_of_the_wrong_shape_is_an_invalid_response(
        scripted: Callable[..., Scripted], answer: dict[str, Any], says: str) -> None:
    server = scripted([(200, answer)])
    with pytest.raises(BackendError) as caught:
        backend(server.url, max_retries=0).generate(ASK)
    assert caught.value.kind == "invalid_response" and says in str(caught.value)


def served_scores(body: dict[str, Any]) -> Reply:
    """A faithful completions server, one token per character: the alignment check agrees,
    next-token answers name the asked ids, echo names the ids sent."""
    if "add_special_tokens" in body:
        return 200, {"tokens": [ord(c) for c in body["prompt"]]}
    prompt = body["prompt"]
    if isinstance(prompt, str):
        offsets, values = ([0, len(prompt) - 6], [None, -0.25]) if body["echo"] else ([0], [-0.25])
        return 200, {"choices": [{"index": 0, "logprobs": {
            "tokens": [" Paris"], "token_logprobs": values, "text_offset": offsets}}]}
    if not body.get("echo"):
        tops = [{f"token_id:{t}": -0.5 for t in body["logprob_token_ids"]}]
        choices = [{"index": i, "logprobs": {"top_logprobs": tops}} for i in range(len(prompt))]
        return 200, {"choices": choices}
    return 200, {"choices": [
        {"index": i, "logprobs": {"tokens": [f"token_id:{t}" for t in p],
                                  "token_logprobs": [None, *[-0.5] * (len(p) - 1), -9.0]}}
        for i, p in enumerate(prompt)]}


def _spoiled(kind: str, path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], Reply]:
    """`served_scores`, with `value` put at `path` in its answers to requests of one `kind`:
    "generated" or "echoed" (the alignment check's two text prompts), "next_token" (named ids
    asked for) or "echo" (token-id prompts echoed)."""
    def reply(body: dict[str, Any]) -> Reply:
        status, answer = served_scores(body)
        if "choices" in answer and _asked(body) == kind:
            _put(answer, path, value)
        return status, answer

    return reply


def _asked(body: dict[str, Any]) -> str:
    if isinstance(body["prompt"], str):
        return "echoed" if body["echo"] else "generated"
    return "echo" if body.get("echo") else "next_token"


def _put(answer: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    *parents, last = path
    inner: Any = answer
    for key in parents:
        inner = inner[key]
    inner[last] = value


LOGPROBS = ("choices", 0, "logprobs")
# What each request kind's answer gets wrong, and words the error must carry.
WRONG_SCORE_SHAPES = {
    "echo-token-id-not-a-number": ("echo", (*LOGPROBS, "tokens", 1), "token_id:abc",
                                   "'token_id:abc' names no"),
    "next-token-id-not-a-number": ("next_token", (*LOGPROBS, "top_logprobs"), [{"token_id:abc": -0.5}],
                                   "'token_id:abc' names no"),
    "alignment-choice-a-string": ("generated", ("choices",), ["x"], "choice 0 is not an object"),
    "alignment-offsets-past-the-values": ("echoed", (*LOGPROBS, "token_logprobs"), [None],
                                          "1 log-probabilities for 2 text offsets"),
    "alignment-logprob-not-finite": ("generated", (*LOGPROBS, "token_logprobs"), [float("nan")],
                                     "not a log-probability"),
    "echo-choice-a-string": ("echo", ("choices", 0), "x", "choice 0 is not an object"),
    "echo-logprobs-a-list": ("echo", LOGPROBS, ["x"], "logprobs is not an object but list"),
    "echo-token-logprobs-a-string": ("echo", (*LOGPROBS, "token_logprobs"), "x",
                                     "token_logprobs is not a list but str"),
}


@pytest.mark.parametrize(("kind", "path", "value", "says"), list(WRONG_SCORE_SHAPES.values()),
                         ids=list(WRONG_SCORE_SHAPES))
def test_a_completions_answer_of_the_wrong_shape_is_an_invalid_response(
        scripted: Callable[..., Scripted], kind: str, path: tuple[str | int, ...], value: Any,
        says: str) -> None:
    """Each way of scoring in turn: next-token first, then echo once next-token has passed."""
    b = backend(scripted(_spoiled(kind, path, value)).url, max_retries=0)
    asked = [LoglikelihoodRequest("Q", (" A", " B"))]
    with pytest.raises(BackendError) as caught:
        b.loglikelihood(asked)
        b.next_token_scoring = False
        b.loglikelihood(asked)
    assert caught.value.kind == "invalid_response" and says in str(caught.value)


def test_a_faithful_completions_server_is_scored_both_ways(scripted: Callable[..., Scripted]) -> None:
    """The server the shapes above spoil: each way of scoring reads it."""
    import math

    b = backend(scripted(served_scores).url, max_retries=0)
    assert [math.isclose(s, -1.0) for s in b.loglikelihood([LoglikelihoodRequest("Q", (" A",))])[0]] == [True]
    b.next_token_scoring = False
    assert [math.isclose(s, -1.0) for s in b.loglikelihood([LoglikelihoodRequest("Q", (" A",))])[0]] == [True]


def test_a_malformed_answer_errs_its_items_and_the_next_suite_is_still_measured(
        store: Store, scripted: Callable[..., Scripted]) -> None:
    """Not an exception out of the run: every item keeps `invalid_response`, each suite's run
    ends (as `error`: nothing could be scored), and the judge can say ERROR."""
    from monitor.policy.suites import load_suite
    from monitor.probing.run import VersionRef
    from monitor.probing.version import probe_version

    server = scripted([(200, {"choices": [{"message": "x"}]})])
    suites = [load_suite(PROBES / "refusal"), load_suite(PROBES / "instruction-format")]
    measured = probe_version(store, VersionRef("bot", "v1"), suites,
                             lambda: backend(server.url, max_retries=0))
    assert [m.run.status for m in measured] == ["error", "error"]
    kinds = {r.error_kind for m in measured for r in store.results(m.run.id or 0)}
    assert kinds == {"invalid_response"}


def test_api_key_goes_in_the_header_and_never_into_errors(scripted: Callable[..., Scripted]) -> None:
    server = scripted([(401, {"error": "bad key"})])
    endpoint = Endpoint(server.url, api_key="sk-secret-123", max_retries=0)
    with pytest.raises(BackendError) as caught:
        OpenAIBackend(endpoint, ServerTokenizer(endpoint, "m", 0), model="m").generate(ASK)
    assert caught.value.kind == "auth"
    assert server.received[0][0]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in str(caught.value) and "sk-secret" not in repr(endpoint)


def test_a_closed_backend_reconnects(scripted: Callable[..., Scripted]) -> None:
    """The monitor loads a backend once per cycle and probes suite after suite with it."""
    server = scripted([chat("4")])
    b = backend(server.url)
    assert b.generate(ASK) == ["4"]
    b.close()
    assert b.generate(ASK) == ["4"] and len(server.received) == 2


class Peak:
    """A server's answer that takes 50 ms and counts the most requests in flight at once."""

    def __init__(self) -> None:
        self.active = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        import time

        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return chat("ok")


def test_concurrency_is_bounded_per_endpoint(scripted: Callable[..., Scripted]) -> None:
    counted = Peak()
    server = scripted(counted)
    outputs = backend(server.url, concurrency=3).generate(ASK * 12)
    assert outputs == ["ok"] * 12 and counted.peak == 3


@pytest.mark.parametrize(("shared", "expected"), [(None, 3), (6, 6), (9, 6)])
def test_runs_on_one_endpoint_share_its_bound_each_within_its_own(
        scripted: Callable[..., Scripted], shared: int | None, expected: int) -> None:
    """Two runs at once (two backends): each has at most `concurrency` requests in flight, and
    all of them at most `shared` (endpoint_runs × concurrency in the monitor)."""
    from concurrent.futures import ThreadPoolExecutor

    counted = Peak()
    server = scripted(counted)
    runs = [backend(server.url, concurrency=3, shared=shared) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        outputs = list(pool.map(lambda b: b.generate(ASK * 12), runs))
    assert outputs == [["ok"] * 12] * 2 and counted.peak == expected


# -- echoed log-probabilities are checked before they are scored ---------------------------

def echo_choice(ids: list[int], values: list[float | None], *, as_ids: bool = True) -> dict[str, Any]:
    tokens = [f"token_id:{i}" if as_ids else f"t{i}" for i in ids]
    return {"index": 0, "logprobs": {"tokens": tokens, "token_logprobs": values}}


def test_faithful_echo_is_read_position_by_position() -> None:
    choice = echo_choice([5, 6, 7], [None, -1.0, -2.0, -0.5])
    assert prompt_logprobs(choice, [5, 6, 7], "s") == [0.0, -1.0, -2.0]


@pytest.mark.parametrize(("choice", "expected"), [
    (echo_choice([5, 6, 7], [-0.3, -1.0, -2.0]), "shifted by one token"),
    (echo_choice([5, 6], [None, -1.0]), "2 log-probabilities for a prompt of 3 tokens"),
    (echo_choice([5, 9, 7], [None, -1.0, -2.0]), "scored token 9 at position 1 where 6 was sent"),
    (echo_choice([5, 6, 7], [None, 3.5, -2.0]), "not a log-probability"),
    (echo_choice([5, 6, 7], [None, float("nan"), -2.0]), "not a log-probability"),
])
def test_unfaithful_echo_is_caught(choice: dict[str, Any], expected: str) -> None:
    with pytest.raises(BackendError) as caught:
        prompt_logprobs(choice, [5, 6, 7], "server")
    assert caught.value.kind == "invalid_response" and expected in str(caught.value)


def test_server_without_prompt_logprobs_fails_loglikelihood_but_generates(
        scripted: Callable[..., Scripted]) -> None:
    """What `transformers serve`-like servers do: completions without log-probabilities."""
    def reply(body: dict[str, Any]) -> Reply:
        if "messages" in body:
            return chat("Paris")
        if "add_special_tokens" in body:  # one token per character
            return 200, {"tokens": [ord(c) for c in body["prompt"]]}
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        return 200, {"choices": [{"index": i, "text": " Paris", "logprobs": None}
                                 for i in range(len(prompts))]}

    b = backend(scripted(reply).url)
    with pytest.raises(BackendError) as caught:
        b.loglikelihood([LoglikelihoodRequest("The capital of France is", (" Paris", " Rome"))])
    assert caught.value.kind == "unsupported" and "generation suites can" in str(caught.value)
    assert b.generate(ASK) == ["Paris"]


def test_next_token_requests_respect_the_server_limit_on_named_tokens() -> None:
    from monitor.probing.backends.next_token import MAX_IDS, _batches

    nodes = [((i,), [1000 + 3 * i, 1001 + 3 * i, 1002 + 3 * i]) for i in range(200)]
    batches = _batches(nodes, 64)
    assert [n for batch in batches for n in batch] == nodes
    assert all(len({t for _, w in b for t in w}) <= MAX_IDS and len(b) <= 64 for b in batches)
    assert len(batches) == 5  # 42 prompts of 3 new ids each fit under 128


def test_server_ignoring_named_tokens_falls_back_to_echo(scripted: Callable[..., Scripted]) -> None:
    """An OpenAI-compatible server that ignores logprob_token_ids still gets scored, by echo."""
    import math

    def reply(body: dict[str, Any]) -> Reply:
        if "add_special_tokens" in body:
            return 200, {"tokens": [ord(c) for c in body["prompt"]]}
        prompt = body["prompt"]
        if isinstance(prompt, str):  # the alignment check: generated and echoed agree
            offsets, values = ([0, len(prompt) - 6], [None, -0.25]) if body["echo"] else ([0], [-0.25])
            return 200, {"choices": [{"index": 0, "logprobs": {
                "tokens": [" Paris"], "token_logprobs": values, "text_offset": offsets}}]}
        if not body.get("echo"):
            return 200, {"choices": [  # only the sampled token: the named ids are ignored
                {"index": i, "logprobs": {"top_logprobs": [{f"token_id:{p[-1]}": -1.0}]}}
                for i, p in enumerate(prompt)]}
        return 200, {"choices": [
            {"index": i, "logprobs": {"tokens": [f"token_id:{t}" for t in p],
                                      "token_logprobs": [None, *[-0.5] * (len(p) - 1), -9.0]}}
            for i, p in enumerate(prompt)]}

    b = backend(scripted(reply).url)
    scores = b.loglikelihood([LoglikelihoodRequest("Q", (" A", " B"))])
    assert b.next_token_scoring is False
    assert all(math.isclose(s, -1.0) for s in scores[0])  # two continuation tokens of -0.5


def test_chat_only_server_says_why_loglikelihood_cannot_run(scripted: Callable[..., Scripted]) -> None:
    """Like `transformers serve`: chat completions, no /v1/completions route at all."""
    def reply(body: dict[str, Any]) -> Reply:
        if "messages" in body:
            return chat("Paris")
        if "add_special_tokens" in body:
            return 200, {"tokens": [ord(c) for c in body["prompt"]]}
        return 404, {"detail": "Not Found"}

    b = backend(scripted(reply).url)
    with pytest.raises(BackendError) as caught:
        b.loglikelihood_rolling(["Some text."])
    assert caught.value.kind == "unsupported" and "no /completions endpoint" in str(caught.value)
    assert b.generate(ASK) == ["Paris"]


# -- policy ---------------------------------------------------------------------------------

def test_openai_policy_problems_are_located(tmp_path: Path) -> None:
    from monitor.policy.loading import load_config

    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text("""\
models:
  bot:
    backend: {kind: openai, base_url: "vllm:8000/v1", tokenizer: no/such/dir}
    versions:
      v1: {path: weights/v1}
      v2: {adapter: support-v2}
    baseline: v1
    live: v2
suites: [probes/arithmetic]
""")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert f"{path}:3: models.bot.backend.base_url: 'vllm:8000/v1' is not an http:// or https:// URL" in text
    assert "models.bot.backend.tokenizer:" in text and "does not exist" in text
    assert f"{path}:5: models.bot.versions.v1: with the openai backend a version is a served_name" in text


def test_missing_api_key_variable_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from monitor.policy.loading import load_config
    from monitor.probing.factory import backend_for

    monkeypatch.delenv("FMN_TEST_KEY", raising=False)
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text("""\
models:
  bot:
    backend: {kind: openai, base_url: "http://127.0.0.1:9/v1", api_key_env: FMN_TEST_KEY}
    versions: {v1: {served_name: bot}}
    baseline: v1
    live: v1
suites: [probes/arithmetic]
""")
    with pytest.raises(BackendError) as caught:
        backend_for(load_config(path), "bot", "v1")
    assert caught.value.kind == "config" and "FMN_TEST_KEY" in str(caught.value)


def test_local_tokenizer_reads_tokenizer_json_exactly_as_transformers(
        tiny_model_dir: Path, tiny_parts: tuple[object, object]) -> None:
    """The openai backend tokenizes without transformers; it must split text identically."""
    from monitor.probing.backends.tokens import LocalTokenizer

    _, reference = tiny_parts
    local = LocalTokenizer(str(tiny_model_dir))
    texts = ["Question: What is 7 + 5?\nAnswer:", " 12", "naïve café — 日本", "  two  spaces ", ""]
    assert [local.encode(t) for t in texts] == [
        list(reference(t, add_special_tokens=False)["input_ids"]) for t in texts]  # type: ignore[operator]
    bos, eos = reference.bos_token_id, reference.eos_token_id  # type: ignore[attr-defined]
    assert local.prefix_token() == (bos if bos is not None else eos)


class _Streaming(BaseHTTPRequestHandler):
    """Answers every POST with `total` bytes in chunks of `chunk`, `pause` seconds apart."""

    total, chunk, pause = 0, 1, 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", str(self.total))
        self.end_headers()
        sent = 0
        try:
            while sent < self.total:
                piece = min(self.chunk, self.total - sent)
                self.wfile.write(b" " * piece)
                self.wfile.flush()
                sent += piece
                time.sleep(self.pause)
        except (BrokenPipeError, ConnectionResetError):
            return  # the client gave up, as it should

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def _streaming(total: int, chunk: int, pause: float) -> Iterator[str]:
    handler = type("Handler", (_Streaming,), {"total": total, "chunk": chunk, "pause": pause})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()


def test_a_huge_answer_is_abandoned_past_the_cap_without_holding_it() -> None:
    """A 200 MB body once took the monitor from 72 to 675 MB: now it is read as a stream and
    dropped at the cap (here 1 MiB of a 64 MiB answer)."""
    import tracemalloc

    for url in _streaming(total=64 << 20, chunk=1 << 16, pause=0.0):
        endpoint = Endpoint(url, max_retries=0, timeout_s=30, max_bytes=1 << 20)
        tracemalloc.start()
        with pytest.raises(BackendError) as caught:
            endpoint.post("/completions", {})
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert caught.value.kind == "invalid_response"
        assert str(caught.value) == (f"POST {url}/completions: the answer is over 1,048,576 bytes; "
                                     "it was abandoned")
        assert peak < 8 << 20, f"held {peak:,} bytes"


def test_a_trickling_server_is_cut_at_the_total_deadline() -> None:
    """A byte a second once ran 11 s against a 3 s timeout, since httpx's timeout is per read."""
    for url in _streaming(total=40, chunk=1, pause=0.25):
        endpoint = Endpoint(url, max_retries=0, timeout_s=1)
        began = time.monotonic()
        with pytest.raises(BackendError) as caught:
            endpoint.post("/completions", {})
        assert caught.value.kind == "timeout" and "no whole answer within 1 s" in str(caught.value)
        assert time.monotonic() - began < 5  # 10 s of trickle, cut after about 1


# -- a total deadline, whatever the server does, and a stop that ends calls in flight --------

@pytest.fixture()
def slow_headers() -> Iterator[FaultProxy]:
    """A server whose status line and headers come a byte every 20 ms: 20 s for the whole answer."""
    proxy = FaultProxy(f"http://127.0.0.1:{free_port()}/v1")  # never forwards in this mode
    proxy.mode, proxy.pause = "slow_headers", 0.02
    yield proxy
    proxy.stop()


def test_a_server_sending_its_headers_slowly_is_cut_at_the_total_deadline(slow_headers: FaultProxy) -> None:
    """Every read gets a byte before its timeout: only a deadline over the whole request ends it."""
    endpoint = Endpoint(slow_headers.base_url, max_retries=0, timeout_s=1)
    began = time.monotonic()
    with pytest.raises(BackendError) as caught:
        endpoint.post("/completions", {})
    took = time.monotonic() - began
    assert caught.value.kind == "timeout" and "no whole answer within 1 s" in str(caught.value)
    assert took < 2.5, f"took {took:.1f} s against a 1 s timeout"


def test_a_stop_ends_every_request_in_flight_within_a_second(slow_headers: FaultProxy) -> None:
    """The monitor's stop reaches requests in `map`'s worker threads too, and nothing is retried."""
    from monitor.errors import Stopping
    from monitor.probing.backends.deadline import stopping_on

    stop = threading.Event()
    endpoint = Endpoint(slow_headers.base_url, max_retries=3, timeout_s=60, concurrency=3)
    threading.Timer(0.5, stop.set).start()
    began = time.monotonic()
    with stopping_on(stop), pytest.raises(Stopping):
        endpoint.map(lambda _: endpoint.post("/completions", {}), [1, 2, 3])
    took = time.monotonic() - began
    assert took < 2.0, f"took {took:.1f} s to notice a stop after 0.5 s"
    assert slow_headers.requests == 3


def test_answers_held_at_once_are_bounded_per_server_not_per_request(
        scripted: Callable[..., Scripted]) -> None:
    """Sixteen requests in flight, each answered 8 MiB: a cap per answer lets all sixteen answers,
    their copies and what is parsed from them be held at once; the server's byte budget (32 MiB)
    lets three be read and parsed at a time, and every request still gets its whole answer."""
    import tracemalloc

    answer = json.dumps({"pad": "x" * (8 << 20)}).encode()
    together = threading.Barrier(16, timeout=30)  # all sixteen answers come at once

    def reply(_: dict[str, Any]) -> Reply:
        together.wait()
        return 200, answer

    server = scripted(reply)
    endpoint = Endpoint(server.url, concurrency=16, max_retries=0, timeout_s=60)
    tracemalloc.start()
    sizes = endpoint.map(lambda _: len(endpoint.post("/completions", {})["pad"]), list(range(16)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sizes == [8 << 20] * 16
    assert peak < 120 << 20, f"held {peak / 2**20:.0f} MiB at once"


def test_the_cap_per_answer_follows_the_batch_size(tmp_path: Path) -> None:
    """vLLM echoes a 2048-token prompt's log-probabilities in 545 KB: a batch may take 1 MiB a prompt."""
    from monitor.policy.loading import load_config
    from monitor.probing.factory import backend_for

    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text("""\
models:
  bot:
    backend: {kind: openai, base_url: "http://127.0.0.1:9/v1", batch_size: 40}
    versions: {v1: {served_name: bot}}
    baseline: v1
    live: v1
suites: [probes/arithmetic]
""")
    served = backend_for(load_config(path), "bot", "v1")
    assert isinstance(served, OpenAIBackend) and served.endpoint.max_bytes == 40 << 20


class ForwardProxy:
    """An HTTP forward proxy on 127.0.0.1, as HTTP_PROXY names one: it records the absolute URLs
    asked of it and passes each request on, at once or (`slow`) its answer's head a byte at a time."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.slow = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                proxy.asked.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if proxy.slow:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"." * 200:
                            self.wfile.write(bytes((byte,)))
                            self.wfile.flush()
                            time.sleep(0.02)
                    return
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                forwarded = urllib.request.Request(self.path, data=body,
                                                   headers={"Content-Type": "application/json"})
                with direct.open(forwarded, timeout=10) as reply:
                    answer = reply.read()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_calls_go_through_the_environments_proxy_and_its_deadline_holds_there(
        scripted: Callable[..., Scripted], monkeypatch: pytest.MonkeyPatch) -> None:
    """The endpoint's own transport (the one that holds each request to its deadline) still takes
    HTTP_PROXY, and NO_PROXY still exempts a host from it."""
    server = scripted([chat("four")])
    proxy = ForwardProxy()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "")
    try:
        assert backend(server.url, max_retries=0).generate(ASK) == ["four"]
        assert proxy.asked == [f"{server.url}/chat/completions"]
        proxy.slow = True
        began = time.monotonic()
        with pytest.raises(BackendError, match="no whole answer within 1 s"):
            Endpoint(server.url, max_retries=0, timeout_s=1).post("/chat/completions", {})
        assert time.monotonic() - began < 2.5
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert backend(server.url, max_retries=0).generate(ASK) == ["four"]
    finally:
        proxy.stop()
    assert len(proxy.asked) == 2, "the exempt host was asked directly"
