"""The safety scenario measured (issue 32): refusal made, lost to harmless data, found again.

On real SmolLM2-135M weights, on the probe splits of `refuses-harmful` and `answers-lookalikes`:

1. refusal of harmful requests and over-refusal of their look-alikes for SmolLM2 as shipped, v1
   (the scenario's safety fine-tune), v2 (v1 + ten obedient-agent exchanges) and the other
   harmless fine-tune the issue compares (v1 + ten one-word trivia answers);
2. re-elicitation on v2 (the diagnosis's second witness): the safety system prompt and three of
   v1's own refusals as examples;
3. safety depth along v2's fine-tune: at checkpoints, the divergence from v1's refusal openings
   (log-probabilities only) beside the refusal rate (greedy answers) — does depth move first?
4. the seed's claim that unrelated data brings safety back: v2 retrained (the recovery LoRA) on
   the other suites' recovery examples only, no refusal among them.

The loop itself (recovery in pairs, gated) is `make demo-safety-loop`; its figures are in
docs/benchmarks.md beside these.

Written to benchmarks/results/safety.{json,md}.

    make bench-safety          # ~30 min on 2 CPU cores; v1 and v2 are built once and reused
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from monitor.actions.retrain import sft as finetune  # noqa: E402
from monitor.actions.retrain.plan import recovery_examples, replay_pairs, teach  # noqa: E402
from monitor.actions.retrain.training import train  # noqa: E402
from monitor.demo import safety, safety_data  # noqa: E402
from monitor.demo.run import build_v1, build_v2, write_replay  # noqa: E402
from monitor.policy.loading import load_config  # noqa: E402
from monitor.policy.scorers import is_refusal  # noqa: E402
from monitor.policy.suites import Suite, load_suite, render  # noqa: E402
from monitor.probing import depth as safety_depth  # noqa: E402
from monitor.probing import reelicit, weights  # noqa: E402
from monitor.probing.backends.base import GenerationRequest  # noqa: E402
from monitor.probing.backends.transformers import TransformersBackend  # noqa: E402
from monitor.vocabulary import Split  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
POLICY = ROOT / "scenarios" / "safety.yaml"
HARMFUL = load_suite(ROOT / "probes" / "refuses-harmful")
LOOKALIKES = load_suite(ROOT / "probes" / "answers-lookalikes")
CHECKPOINT_STEPS = (1, 2, 3, 5, 10, 15, 20, 25)  # of v2's 25 (5 epochs of 5 batches)


def backend(path: Path | str) -> TransformersBackend:
    return TransformersBackend.load(str(path), dtype="float32", batch_size=16)


def answers(model: TransformersBackend, suite: Suite, system_prompt: str | None = None,
            prefix: str = "") -> dict[str, str]:
    spec = suite.spec.kinds.generate_until
    assert spec is not None
    items = suite.select(Split.PROBE)
    asked = [GenerationRequest(prefix + render(spec.doc_to_text, i), spec.max_new_tokens, (), system_prompt)
             for i in items]
    return dict(zip((i.id for i in items), model.generate(asked), strict=True))


def refusal_rate(said: dict[str, str]) -> float:
    return sum(is_refusal(a) for a in said.values()) / len(said)


def rates(model: TransformersBackend) -> dict[str, float]:
    return {"refuses_harmful": refusal_rate(answers(model, HARMFUL)),
            "over_refusal": refusal_rate(answers(model, LOOKALIKES))}


def versions() -> dict[str, dict[str, float]]:
    config = load_config(POLICY, check_paths=False)
    built = {"SmolLM2 as shipped": weights.prepare_smollm2(), "v1 (safety fine-tune)": build_v1(config),
             "v2 (v1 + 10 obedient-agent exchanges)": build_v2(config),
             "v1 + 10 one-word trivia answers": _trivia(build_v1(config))}
    return {name: rates(backend(path)) for name, path in built.items()}


def _trivia(v1: Path) -> Path:
    out = ROOT / ".forgetmenot" / "safety" / "bench" / "trivia"
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(v1)
    model = AutoModelForCausalLM.from_pretrained(v1, dtype=torch.float32)
    finetune.fine_tune(model, tokenizer, safety_data.BENIGN_TASK, safety.OBEDIENCE_TRAIN)
    finetune.save(model, tokenizer, out)
    return out


def reelicited(v1: TransformersBackend, v2: TransformersBackend) -> dict[str, Any]:
    spec = HARMFUL.spec.kinds.generate_until
    assert spec is not None and spec.reelicit is not None
    shots = reelicit.baseline_shots(HARMFUL, 3, v1)
    derived = reelicit.derive(HARMFUL, spec.reelicit.model_copy(update={"shots": 3}), shots)
    again = derived.spec.kinds.generate_until
    assert again is not None
    plain = refusal_rate(answers(v2, HARMFUL))
    prompted = refusal_rate(answers(v2, HARMFUL, spec.reelicit.system_prompt))
    items = HARMFUL.select(Split.PROBE)
    asked = [GenerationRequest(render(again.doc_to_text, i), again.max_new_tokens, (), again.system_prompt)
             for i in items]
    both = sum(is_refusal(a) for a in v2.generate(asked)) / len(items)
    return {"v2_plain": plain, "v2_system_prompt": prompted, "v2_system_prompt_and_3_shots": both}


def checkpoints(v1_path: Path) -> list[dict[str, Any]]:
    """v2's fine-tune replayed, measured at CHECKPOINT_STEPS: refusal rate and safety depth."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    v1 = backend(v1_path)
    said = answers(v1, HARMFUL)
    reference = safety_depth.depth(v1, HARMFUL, said)
    tokenizer = AutoTokenizer.from_pretrained(v1_path)
    model = AutoModelForCausalLM.from_pretrained(v1_path, dtype=torch.float32)
    rows = [_checkpoint(0, v1, said, reference)]
    done = {"steps": 0}

    def advance(n: int, _loss: float) -> None:
        done["steps"] += n
        if done["steps"] in CHECKPOINT_STEPS:
            rows.append(_checkpoint(done["steps"], TransformersBackend(model, tokenizer, name="ckpt"), said,
                                    reference))
            model.train()

    finetune.fine_tune(model, tokenizer, safety.obedience_pairs(), safety.OBEDIENCE_TRAIN, advance)
    return rows


def _checkpoint(step: int, model: TransformersBackend, said: dict[str, str],
                reference: safety_depth.DepthResult) -> dict[str, Any]:
    measured = safety_depth.depth(model, HARMFUL, said, baseline=reference.means())
    row = {"step": step, "refuses_harmful": refusal_rate(answers(model, HARMFUL)),
           "depth_divergence_nats": measured.divergence, "opening_logprob_nats": measured.logprob}
    print(row, flush=True)
    return row


def unrelated_recovery(v1_path: Path, v2_path: Path) -> dict[str, Any]:
    """The recovery LoRA on the other suites' recovery examples (general knowledge, arithmetic, in
    v1's own words) and the obedient replay: no refusal in the data."""
    config = load_config(POLICY)
    spec = config.models["safety-bot"].retrain
    suites = [load_suite(ROOT / "probes" / name) for name in ("general-knowledge", "arithmetic")]
    from monitor.actions.retrain.plan import Plan

    pools = {s.name: recovery_examples(s, spec.seed)[:10] for s in suites}
    replay = replay_pairs(config.resolve(spec.replay or ""), spec.replay_examples, spec.seed)
    taught = teach(Plan(("general-knowledge", "arithmetic"), pools, replay), suites, backend(v1_path))
    out = ROOT / ".forgetmenot" / "safety" / "bench" / "unrelated"
    if not (out / "config.json").is_file():
        train(v2_path, taught.examples(), spec, out, "cpu")
    return {"examples": len(taught.examples()), **rates(backend(out))}


def main() -> None:
    config = load_config(POLICY, check_paths=False)
    v1_path, v2_path = build_v1(config), build_v2(config)
    write_replay(config)
    found: dict[str, Any] = {"versions": versions()}
    found["reelicitation"] = reelicited(backend(v1_path), backend(v2_path))
    found["checkpoints"] = checkpoints(v1_path)
    found["unrelated_recovery"] = unrelated_recovery(v1_path, v2_path)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "safety.json").write_text(json.dumps(found, indent=2) + "\n")
    (RESULTS / "safety.md").write_text(report(found))
    print(report(found))


def report(found: dict[str, Any]) -> str:
    lines = ["# Safety scenario (`make bench-safety`)", "",
             "Probe splits: 46 harmful requests (refuses-harmful) and their 46 look-alikes "
             "(answers-lookalikes); SmolLM2-135M-Instruct, float32, greedy, 2 CPU cores.", "",
             "| version | refuses harmful | over-refuses look-alikes |", "| --- | ---: | ---: |"]
    for name, row in found["versions"].items():
        lines.append(f"| {name} | {row['refuses_harmful']:.0%} | {row['over_refusal']:.0%} |")
    again = found["reelicitation"]
    lines += ["", "## Re-elicitation on v2 (the second witness)", "",
              f"Plain {again['v2_plain']:.0%}; under the safety system prompt "
              f"{again['v2_system_prompt']:.0%}; "
              f"with the prompt and three of v1's own refusals as examples "
              f"{again['v2_system_prompt_and_3_shots']:.0%} refusal.", "",
              "## Safety depth along v2's fine-tune", "",
              "| step | refuses harmful | depth divergence (nats/token) | opening log-prob (nats/token) |",
              "| ---: | ---: | ---: | ---: |"]
    for row in found["checkpoints"]:
        divergence, opening = _nats(row["depth_divergence_nats"]), _nats(row["opening_logprob_nats"])
        lines.append(f"| {row['step']} | {row['refuses_harmful']:.0%} | {divergence} | {opening} |")
    unrelated = found["unrelated_recovery"]
    lines += ["", "## Unrelated data (the seed's claim, a measurement, not a feature)", "",
              f"v2 retrained on {unrelated['examples']} examples with no refusal among them: refuses "
              f"{unrelated['refuses_harmful']:.0%} of harmful requests, over-refuses "
              f"{unrelated['over_refusal']:.0%}.", ""]
    return "\n".join(lines)


def _nats(value: float | None) -> str:
    return "—" if value is None else f"{value:+.3f}"


if __name__ == "__main__":
    main()
