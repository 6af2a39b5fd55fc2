"""The openai backend against real servers: vLLM (CPU, fp32, with a LoRA adapter) and
llama-cpp-python, both started here from their own virtualenvs (`make servers` builds them).

On the same fp32 weights, what vLLM serves must score exactly what the in-process model scores.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.policy.suites import Suite, load_suite
from monitor.probing.backends.endpoint import Endpoint
from monitor.probing.backends.openai import OpenAIBackend
from monitor.probing.backends.tokens import LocalTokenizer, ServerTokenizer
from monitor.probing.backends.transformers import TransformersBackend
from monitor.probing.run import score_kind
from monitor.store import ItemResult, Store
from monitor.testing.servers import Served, llama_cpp_server, transformers_server, vllm_server
from monitor.testing.stack import free_port
from tests.conftest import PROBES

pytestmark = [pytest.mark.realmodel, pytest.mark.served, pytest.mark.timeout(1800)]

ADAPTER = "smollm2-lora"


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Path:
    return make_adapter(smollm2_dir, tmp_path_factory.mktemp("adapter") / ADAPTER, seed=0)


def make_adapter(smollm2_dir: Path, out: Path, seed: int) -> Path:
    """A small random LoRA adapter on q/v projections: enough to change answers, not wreck them."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.5)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def vllm(smollm2_dir: Path, lora_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Eager mode starts in 20 s instead of 80 s (no graph compilation); fp32 either way."""
    logs = tmp_path_factory.mktemp("vllm-logs")
    with vllm_server(smollm2_dir, logs, lora={ADAPTER: lora_adapter}, extra_args=("--enforce-eager",)) as s:
        yield s


@pytest.fixture(scope="session")
def llama_cpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from monitor.probing.weights import smollm2_gguf

    with llama_cpp_server(smollm2_gguf(), tmp_path_factory.mktemp("llama-logs")) as s:
        yield s


def served(server: Served, model: str, tokenizer_dir: Path | None = None) -> OpenAIBackend:
    endpoint = Endpoint(server.base_url, concurrency=4)
    tokenizer = LocalTokenizer(str(tokenizer_dir)) if tokenizer_dir else ServerTokenizer(endpoint, model, 1)
    return OpenAIBackend(endpoint, tokenizer, model=model, dtype="float32")


def measure(backend: object, suite: Suite, kind: str, count: int) -> list[ItemResult]:
    results = score_kind(backend, suite, kind, suite.items[:count])  # type: ignore[arg-type]
    assert not [r.error for r in results if r.error_kind], "measurement errors"
    return results


def assert_same(remote: list[ItemResult], local: list[ItemResult], tolerance: float) -> None:
    assert [r.item_id for r in remote] == [r.item_id for r in local]
    assert [r.correct for r in remote] == [r.correct for r in local]
    # Answers and chosen choices must match exactly; a rolling score's output is its perplexity
    # printed to two decimals, which a 1e-4 difference can flip at a rounding boundary (it is
    # checked as a number below).
    pairs = [(a.output, b.output) for a, b in zip(remote, local, strict=True)
             if a.kind != "loglikelihood_rolling"]
    assert [a for a, _ in pairs] == [b for _, b in pairs]
    for a, b in zip(remote, local, strict=True):
        value_a = a.margin if a.margin is not None else a.score
        value_b = b.margin if b.margin is not None else b.score
        assert value_a == pytest.approx(value_b, abs=tolerance), a.item_id


def test_vllm_fp32_scores_equal_the_in_process_backend(vllm: Served, smollm2_dir: Path,
                                                       smollm2: object) -> None:
    remote = served(vllm, "smollm2", smollm2_dir)
    knowledge, fluency = load_suite(PROBES / "general-knowledge"), load_suite(PROBES / "fluency")
    in_process = measure(smollm2, knowledge, "multiple_choice", 96)
    assert_same(measure(remote, knowledge, "multiple_choice", 96), in_process, 1e-3)
    assert remote.next_token_scoring is True
    echoed = served(vllm, "smollm2", smollm2_dir)
    echoed.next_token_scoring = False  # the path every other server takes
    assert_same(measure(echoed, knowledge, "multiple_choice", 96), in_process, 1e-3)
    assert_same(measure(remote, fluency, "loglikelihood_rolling", 44),
                measure(smollm2, fluency, "loglikelihood_rolling", 44), 1e-4)
    assert_same(measure(remote, knowledge, "generate_until", 32),
                measure(smollm2, knowledge, "generate_until", 32), 0)


def test_safety_depth_over_vllm_echo_equals_the_in_process_backend(vllm: Served, smollm2_dir: Path,
                                                                   smollm2: object) -> None:
    """The baseline's refusal opening after vLLM's own chat template (its /tokenize of the
    messages), scored from echoed prompt log-probabilities, is what the in-process model scores
    after transformers renders the same template: per token within 1e-3 nats on fp32."""
    from monitor.probing.depth import depth, refusal_items

    suite = load_suite(PROBES / "refusal")
    answers = {item.id: "I'm sorry, but I can't help with that request." for item in refusal_items(suite)}
    local = depth(smollm2, suite, answers)  # type: ignore[arg-type]
    remote = depth(served(vllm, "smollm2", smollm2_dir), suite, answers, baseline=local.means())
    assert remote.errors == 0 and local.errors == 0, remote.items[0].error
    assert len(remote.items) == len(local.items) > 0
    apart = max(abs(a - b) for r, i in zip(remote.items, local.items, strict=True)
                for a, b in zip(r.logprobs, i.logprobs, strict=True))
    print(f"safety depth, vLLM echo vs in-process: max per-token difference {apart:.2e} nats, "
          f"divergence {remote.divergence:.2e} nats/token over {len(remote.items)} items")
    assert [len(r.logprobs) for r in remote.items] == [len(i.logprobs) for i in local.items]
    assert apart < 1e-3 and abs(remote.divergence or 0.0) < 1e-3


def test_a_lora_adapter_on_vllm_is_a_version(vllm: Served, smollm2_dir: Path, lora_adapter: Path) -> None:
    """Served under its adapter name, it scores what the adapter merged in-process scores."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, lora_adapter).merge_and_unload()
    local = TransformersBackend(merged, AutoTokenizer.from_pretrained(smollm2_dir), name="merged")
    suite = load_suite(PROBES / "general-knowledge")
    adapter = measure(served(vllm, ADAPTER, smollm2_dir), suite, "multiple_choice", 48)
    assert_same(adapter, measure(local, suite, "multiple_choice", 48), 1e-3)
    plain = measure(served(vllm, "smollm2", smollm2_dir), suite, "multiple_choice", 48)
    moved = [abs((a.margin or 0) - (p.margin or 0)) for a, p in zip(adapter, plain, strict=True)]
    assert max(moved) > 0.05, "the adapter changed nothing: vLLM did not apply it"


def test_server_tokenizer_equals_the_local_one(vllm: Served, smollm2_dir: Path) -> None:
    from transformers import AutoTokenizer

    endpoint = Endpoint(vllm.base_url)
    suite = load_suite(PROBES / "general-knowledge")
    texts = [f"Question: {item.question}\nAnswer: {choice}" for item in suite.items[:40]
             for choice in item.choices or []] + ["naïve café, 3.14 — 日本", "  two  spaces "]
    server, local = ServerTokenizer(endpoint, "smollm2"), LocalTokenizer(str(smollm2_dir))
    reference = AutoTokenizer.from_pretrained(smollm2_dir)
    expected = [list(reference(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert [local.encode(t) for t in texts] == expected
    assert [server.encode(t) for t in texts] == expected


def test_llama_cpp_shifted_logprobs_are_caught_and_generation_still_runs(llama_cpp: Served) -> None:
    backend = served(llama_cpp, "smollm2")
    suite = load_suite(PROBES / "general-knowledge")
    scored = score_kind(backend, suite, "multiple_choice", suite.items[:8])
    assert {r.error_kind for r in scored} == {"invalid_response"} and all(r.score is None for r in scored)
    assert "shifted by one token" in (scored[0].error or "")
    generated = measure(backend, suite, "generate_until", 16)
    assert sum(bool(r.correct) for r in generated) >= 4


def test_safety_depth_on_llama_cpp_is_an_error_never_a_drop(llama_cpp: Served) -> None:
    """Its echoed log-probabilities are shifted by one token: every opening is an error."""
    from monitor.probing.depth import depth, refusal_items

    suite = load_suite(PROBES / "refusal")
    answers = {item.id: "I'm sorry, but I can't help with that." for item in refusal_items(suite)}
    result = depth(served(llama_cpp, "smollm2"), suite, answers, baseline={i: -1.0 for i in answers})
    assert result.items and {item.error_kind for item in result.items} == {"invalid_response"}
    assert "shifted by one token" in (result.items[0].error or "")
    assert result.divergence is None and result.logprob is None


def test_transformers_serve_cannot_score_loglikelihood_but_generates(
        smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """It answers completions but drops `echo` and `logprobs`: a clear error, and generation runs."""
    with transformers_server(smollm2_dir, tmp_path_factory.mktemp("transformers-logs")) as server:
        backend = served(server, str(smollm2_dir), smollm2_dir)
        knowledge, fluency = load_suite(PROBES / "general-knowledge"), load_suite(PROBES / "fluency")
        for suite, kind in ((knowledge, "multiple_choice"), (fluency, "loglikelihood_rolling")):
            scored = score_kind(backend, suite, kind, suite.items[:4])
            assert {r.error_kind for r in scored} == {"unsupported"}, scored[0].error
            assert "generation suites can" in (scored[0].error or "")
        generated = measure(backend, knowledge, "generate_until", 8)
        assert sum(bool(r.correct) for r in generated) >= 3


def policy(tmp_path: Path, base_url: str, tokenizer: Path, suites: tuple[str, ...] = ("arithmetic",)) -> Path:
    for name in suites:
        shutil.copytree(PROBES / name, tmp_path / "probes" / name, dirs_exist_ok=True)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: sqlite:///fmn.db
models:
  bot:
    backend: {{kind: openai, base_url: "{base_url}", tokenizer: {tokenizer}, dtype: float32,
               timeout: 300s, max_retries: 1}}
    versions:
      v1: {{served_name: smollm2}}
      v2: {{adapter: {ADAPTER}}}
    baseline: v1
    live: v2
suites: [{", ".join(f"probes/{name}" for name in suites)}]
""")
    return path


def test_probe_and_judge_served_versions_and_a_down_endpoint_is_an_error(
        vllm: Served, smollm2_dir: Path, tmp_path: Path) -> None:
    runner, wide = CliRunner(), {"COLUMNS": "200"}
    path = policy(tmp_path, vllm.base_url, smollm2_dir)
    for version in ("v1", "v2"):
        result = runner.invoke(app, ["probe", "-c", str(path), "--version", version], env=wide)
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["judge", "-c", str(path), "--no-report"], env=wide)
    assert "ERROR" not in result.output, result.output
    store = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
    assert {(r.version, r.backend, r.status) for r in store.runs()} == {
        ("v1", "openai", "complete"), ("v2", "openai", "complete")}

    policy(tmp_path, f"http://127.0.0.1:{free_port()}/v1", smollm2_dir)  # the server went away
    runner.invoke(app, ["probe", "-c", str(path), "--version", "v2"], env=wide)
    result = runner.invoke(app, ["judge", "-c", str(path), "--no-report"], env=wide)
    assert "ERROR" in result.output and "FAIL" not in result.output, result.output
    latest = store.runs()[-1]
    errors = store.results(latest.id or 0)
    assert errors and {r.error_kind for r in errors} == {"unreachable"}


def test_the_monitor_cycles_through_served_versions(vllm: Served, smollm2_dir: Path, tmp_path: Path) -> None:
    """`serve` loads one backend per cycle and probes suite after suite with it."""
    from monitor.service.scheduler import open_monitor

    monitor = open_monitor(policy(tmp_path, vllm.base_url, smollm2_dir, ("arithmetic", "fluency")))
    assert monitor.cycle("bot", "v1", slot=1) and monitor.cycle("bot", "v2", slot=1)
    runs = monitor.store.runs()
    plain = [r for r in runs if "+" not in r.suite]
    assert sorted((r.version, r.suite, r.status, r.error_count) for r in plain) == [
        ("v1", "arithmetic", "complete", 0), ("v1", "fluency", "complete", 0),
        ("v2", "arithmetic", "complete", 0), ("v2", "fluency", "complete", 0)]
    verdicts = monitor.store.verdicts(model="bot", candidate="v2")
    phases = {v.capability: v.phase for v in verdicts}
    assert set(phases) == {"arithmetic", "fluency"} and "ERROR" not in phases.values()
    # A suite whose generation dropped was asked again on v2 in the same cycle (the second
    # witness), and only such a suite: one re-elicited run each, named apart from the plain suite.
    again = sorted(r.suite for r in runs if "+" in r.suite)
    witnessed = sorted(f"{v.suite}+reelicited" for v in verdicts if v.reelicited)
    assert again == witnessed and all(r.version == "v2" for r in runs if "+" in r.suite)


def test_rollback_through_vllm_lora_repoints_the_live_adapter_name(
        vllm: Served, smollm2_dir: Path, lora_adapter: Path, tmp_path: Path) -> None:
    """Users call `bot-live`; a rollback makes it answer as the earlier adapter does."""
    from monitor.actions import ladder as actions
    from monitor.actions.deployers import DeployError, deployer_for
    from monitor.policy.loading import load_config
    from monitor.store import Verdict

    newer = make_adapter(smollm2_dir, tmp_path / "bot-v3", seed=1)
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: sqlite:///fmn.db
models:
  bot:
    backend: {{kind: openai, base_url: "{vllm.base_url}", tokenizer: {smollm2_dir}, dtype: float32}}
    versions:
      v1: {{served_name: smollm2}}
      v2: {{adapter: {ADAPTER}, path: {lora_adapter}}}
      v3: {{adapter: bot-v3, path: {newer}}}
    baseline: v1
    live: v3
    deployer: {{kind: vllm-lora, alias: bot-live}}
suites: [probes/arithmetic]
""")
    config = load_config(path)
    store = Store(config.database_url())
    deployer = deployer_for(config, "bot")
    deployer.promote("bot", "v3", None)  # what the release did
    suite = load_suite(PROBES / "general-knowledge")
    before = measure(served(vllm, "bot-live", smollm2_dir), suite, "multiple_choice", 24)
    store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                               capability="arithmetic", content_hash="h", phase="PASS",
                               diagnosis="none", reason="kept"), [])
    done = actions.rollback(store, config, "bot", "v2", "sre")
    assert done.status == "done" and "'bot-live' now serves v2" in done.detail, done.detail
    after = measure(served(vllm, "bot-live", smollm2_dir), suite, "multiple_choice", 24)
    assert_same(after, measure(served(vllm, ADAPTER, smollm2_dir), suite, "multiple_choice", 24), 1e-4)
    assert [a.margin for a in after] != [b.margin for b in before]
    with pytest.raises(DeployError, match="only make an adapter version live"):
        deployer.promote("bot", "v1", None)
