"""Safety depth: the baseline's refusal openings scored on a version, in process and over HTTP,
kept with the run, exported, and drawn. Real servers are in test_served.py."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from monitor.errors import BackendError
from monitor.metrics import names as m
from monitor.metrics.dashboards import build_all
from monitor.metrics.exporter import StoreCollector
from monitor.policy.schema import Policy
from monitor.policy.suites import Suite, load_suite, render
from monitor.probing.backends.base import OpeningRequest
from monitor.probing.backends.chat import NOT_SUPPORTED
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.depth import NO_REFUSAL, OPENING_TOKENS, depth, refusal_items
from monitor.probing.run import VersionRef, probe_suite
from monitor.store import Store
from monitor.testing.stack import free_port
from monitor.vocabulary import SAFETY_DEPTH, ErrorKind
from tests.conftest import PROBES
from tests.test_endpoint import Reply, Scripted, backend, served_scores

REFUSAL = "I can't help with that request, it could hurt people."


@pytest.fixture(scope="module")
def suite() -> Suite:
    return load_suite(PROBES / "refusal")


def refusing(suite: Suite, answer: str = REFUSAL) -> dict[str, str]:
    """The baseline's answers by item id: `answer` to every harmful item, help to the others."""
    harmful = {item.id for item in refusal_items(suite)}
    return {item.id: answer if item.id in harmful else "Sure, here is how." for item in suite.items}


def by_prompt(suite: Suite, answer: str = REFUSAL) -> dict[str, str]:
    """The same answers keyed as the fake backend is asked: by prompt."""
    spec = suite.spec.kinds.generate_until
    assert spec is not None
    answers = refusing(suite, answer)
    return {render(spec.doc_to_text, item): answers[item.id] for item in suite.items}


def direct(parts: tuple[Any, Any], request: OpeningRequest) -> list[float]:
    """Per-token log-probabilities of the opening, from one plain forward pass."""
    import torch

    model, tokenizer = parts
    system = [{"role": "system", "content": request.system_prompt}] if request.system_prompt else []
    chat = [*system, {"role": "user", "content": request.prompt}]
    prompt = list(
        tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
    )
    opening = tokenizer(request.answer, add_special_tokens=False)["input_ids"][: request.tokens]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + opening])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [logprobs[len(prompt) - 1 + i, token].item() for i, token in enumerate(opening)]


# -- in process -------------------------------------------------------------------------------


def test_the_opening_is_cut_to_k_tokens_and_scored_as_a_plain_forward_pass_scores_it(
    tiny_backend: Any, tiny_parts: tuple[Any, Any]
) -> None:
    requests = [
        OpeningRequest("How do I pick a lock?", REFUSAL, OPENING_TOKENS, "Be safe."),
        OpeningRequest("Numbers 0 1 2", "No.", OPENING_TOKENS),
        OpeningRequest("Berlin", REFUSAL, 3),
    ]
    scored = tiny_backend.opening_logprobs(requests)
    _, tokenizer = tiny_parts
    assert len(tokenizer(REFUSAL, add_special_tokens=False)["input_ids"]) > OPENING_TOKENS
    assert [len(values) for values in scored] == [OPENING_TOKENS, len(tokenizer("No.")["input_ids"]), 3]
    for request, values in zip(requests, scored, strict=True):
        assert values == pytest.approx(direct(tiny_parts, request), abs=1e-5)


def test_a_version_against_itself_diverges_by_zero_and_another_by_its_difference(
    tiny_backend: Any, suite: Suite
) -> None:
    from monitor.probing.backends.transformers import TransformersBackend
    from tests.conftest import make_tiny_model

    answers = refusing(suite)
    base = depth(tiny_backend, suite, answers)
    assert len(base.items) == len(refusal_items(suite)) and base.errors == 0
    assert base.divergence == 0.0 and base.logprob is not None and base.logprob < 0
    same = depth(tiny_backend, suite, answers, baseline=base.means())
    assert same.divergence == pytest.approx(0.0, abs=1e-9)
    other = TransformersBackend(
        make_tiny_model(len(tiny_backend.tokenizer), seed=1),
        tiny_backend.tokenizer,
        name="other",
        batch_size=4,
    )
    moved = depth(other, suite, answers, baseline=base.means())
    expected = [base.means()[i.item_id] - (i.mean or 0.0) for i in moved.items]
    assert moved.divergence == pytest.approx(sum(expected) / len(expected))
    assert moved.divergence != pytest.approx(0.0, abs=1e-3)
    first = moved.items[0]
    assert first.total == pytest.approx(math.fsum(first.logprobs)) and len(first.logprobs) == OPENING_TOKENS


def test_without_a_baseline_refusal_there_is_no_measurement(tiny_backend: Any, suite: Suite) -> None:
    helped = refusing(suite, "Sure, here is how you do it.")
    result = depth(tiny_backend, suite, helped)
    assert result.items == () and result.reason == NO_REFUSAL
    assert result.divergence is None and result.logprob is None
    assert depth(tiny_backend, load_suite(PROBES / "arithmetic"), refusing(suite)).reason == NO_REFUSAL


# -- over an endpoint ---------------------------------------------------------------------------


def templated(body: dict[str, Any]) -> Reply:
    """`served_scores`, with vLLM's /tokenize of chat messages: three template tokens."""
    if "messages" in body:
        return 200, {"tokens": [1, 2, 3]}
    return served_scores(body)


def no_template(body: dict[str, Any]) -> Reply:
    """A server with neither vLLM's /tokenize of messages nor llama.cpp's /apply-template."""
    if "messages" in body:
        return 404, {"error": "not found"}
    return served_scores(body)


@pytest.fixture()
def scripting() -> Iterator[Callable[[Callable[[dict[str, Any]], Reply]], Scripted]]:
    """A scripted server per reply function, shut down afterwards."""
    servers: list[Scripted] = []

    def make(reply: Callable[[dict[str, Any]], Reply]) -> Scripted:
        servers.append(Scripted(reply))
        return servers[-1]

    yield make
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


Scripting = Callable[[Callable[[dict[str, Any]], Reply]], Scripted]


def test_over_an_endpoint_the_opening_follows_the_servers_chat_template(scripting: Scripting) -> None:
    server = scripting(templated)
    values = backend(server.url, max_retries=0).opening_logprobs([OpeningRequest("Q", "abc", 2, "Be safe.")])
    assert values == [[-0.5, -0.5]]
    asked = next(body for _, body in server.received if "messages" in body)
    assert asked["messages"] == [{"role": "system", "content": "Be safe."}, {"role": "user", "content": "Q"}]
    assert asked["add_generation_prompt"] is True
    echoed = [body["prompt"] for _, body in server.received if isinstance(body.get("prompt"), list)]
    assert echoed == [[[1, 2, 3, ord("a"), ord("b")]]]


def test_a_server_that_cannot_render_its_template_is_an_unsupported_error(
    scripting: Scripting, suite: Suite
) -> None:
    result = depth(backend(scripting(no_template).url, max_retries=0), suite, refusing(suite))
    assert result.items and {item.error_kind for item in result.items} == {"unsupported"}
    assert NOT_SUPPORTED in (result.items[0].error or "")
    assert result.divergence is None and result.logprob is None


def test_a_down_endpoint_is_an_error_never_a_depth_drop(suite: Suite) -> None:
    down = backend(f"http://127.0.0.1:{free_port()}/v1", max_retries=0)
    result = depth(down, suite, refusing(suite), baseline={i.id: -1.0 for i in refusal_items(suite)})
    assert result.errors == len(result.items) > 0
    assert {item.error_kind for item in result.items} == {"unreachable"}
    assert result.divergence is None


# -- in a monitor run: stored, exported, drawn ----------------------------------------------------


def exposition(store: Store) -> list[str]:
    registry = CollectorRegistry()
    registry.register(StoreCollector(store))
    return generate_latest(registry).decode().splitlines()


def series(lines: list[str], spec: m.MetricSpec) -> dict[str, float]:
    found = {}
    for line in lines:
        if line.startswith(spec.full_name + "{"):
            labels, value = line.rsplit(" ", 1)
            version = labels.split('version="')[1].split('"')[0]
            found[version] = float(value)
    return found


def test_a_run_keeps_depth_beside_its_results_and_the_exporter_shows_it(store: Store, suite: Suite) -> None:
    from monitor.judge import judge_suite

    answers = by_prompt(suite)
    v1 = probe_suite(store, FakeBackend(answers=answers), suite, VersionRef("bot", "v1", "v1"))
    v2 = probe_suite(store, FakeBackend(answers=answers, opening=-2.5), suite, VersionRef("bot", "v2", "v1"))
    harmful = len(refusal_items(suite))
    for run, margin in ((v1, 0.0), (v2, 1.5)):
        kept = store.results(run.id or 0, kind=SAFETY_DEPTH)
        assert run.status == "complete" and len(kept) == harmful
        assert {r.margin for r in kept} == {margin} and all(r.output == REFUSAL for r in kept)
    judgement, _ = judge_suite(store, suite, Policy().rules_for(suite.capability), "bot", "v2", "v1")
    assert [k.kind for k in judgement.kinds] == ["generate_until"]
    lines = exposition(store)
    assert series(lines, m.SAFETY_DEPTH_DIVERGENCE) == {"v1": 0.0, "v2": 1.5}
    assert series(lines, m.SAFETY_DEPTH_LOGPROB) == {"v1": -1.0, "v2": -2.5}
    assert not [line for line in lines if "retention_score" in line and SAFETY_DEPTH in line]


def test_a_run_without_baseline_refusals_or_with_a_down_endpoint_shows_no_depth(
    store: Store, suite: Suite
) -> None:
    helped = by_prompt(suite, "Sure, here is how you do it.")
    run = probe_suite(store, FakeBackend(answers=helped), suite, VersionRef("bot", "v1", "v1"))
    assert store.results(run.id or 0, kind=SAFETY_DEPTH) == []
    answers = by_prompt(suite)
    probe_suite(store, FakeBackend(answers=answers), suite, VersionRef("bot", "v1", "v1"))
    run = probe_suite(store, _BrokenOpenings(answers=answers), suite, VersionRef("bot", "v2", "v1"))
    kept = store.results(run.id or 0, kind=SAFETY_DEPTH)
    assert kept and {r.error_kind for r in kept} == {"scripted"} and {r.score for r in kept} == {None}
    assert run.status == "complete" and run.error_count == len(kept)
    lines = exposition(store)
    assert "v2" not in series(lines, m.SAFETY_DEPTH_DIVERGENCE)
    assert "v2" not in series(lines, m.SAFETY_DEPTH_LOGPROB)


class _BrokenOpenings(FakeBackend):
    """Generation answers; only scoring the openings breaks (as a server whose echo fails)."""

    def opening_logprobs(self, requests: Any) -> list[list[float]]:
        raise BackendError("the echo broke", kind=ErrorKind.SCRIPTED)


def test_both_dashboards_draw_safety_depth() -> None:
    for name, doc in build_all().items():
        drawn = [
            p
            for p in doc["panels"]
            if p["type"] != "row"
            and any(m.SAFETY_DEPTH_DIVERGENCE.full_name in t["expr"] for t in p["targets"])
        ]
        assert len(drawn) == 1, name
        assert drawn[0]["fieldConfig"]["defaults"]["unit"] == "suffix: nats/token"
