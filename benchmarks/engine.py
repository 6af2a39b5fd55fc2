"""Engine benchmark: forgetmenot vs lm-evaluation-harness on the same multiple-choice items.

Both run end to end as a user would run them (a fresh process each: import, model load, scoring),
on the same SmolLM2-135M-Instruct transformers folder, fp32 on CPU, batch size 16, over every
general-knowledge item. Rounds alternate which tool goes first. Written to
benchmarks/results/engine.json and engine.md.

    make bench-engine            # or: .venv/bin/python benchmarks/engine.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SUITE = REPO / "probes" / "general-knowledge"
RESULTS = REPO / "benchmarks" / "results"
BIN = Path(sys.executable).parent
BATCH = 16
TASK = "fmn_general_knowledge"

TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""

POLICY = """\
database: sqlite:///{db}
models:
  smollm2:
    backend: {{kind: transformers, device: cpu, dtype: float32, batch_size: {batch}}}
    versions:
      v1: {{path: {model}}}
    baseline: v1
    live: v1
suites: [{suite}]
"""


def items() -> list[dict[str, object]]:
    rows = [json.loads(line) for line in (SUITE / "items.jsonl").read_text().splitlines() if line.strip()]
    return [{"id": r["id"], "question": r["question"], "choices": r["choices"], "gold": r["gold"]}
            for r in rows]


def lm_eval_task(work: Path) -> tuple[Path, Path]:
    """The items as an lm-eval task folder, and a fresh output folder for one run."""
    data = work / "gk.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in items()))
    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data))
    return tasks, work / f"lm-eval-out-{time.monotonic_ns()}"


def lm_eval_scores(out: Path) -> dict[str, list[float]]:
    """Each item's per-choice log-likelihoods, from lm-eval's logged samples."""
    [samples] = list(out.rglob(f"samples_{TASK}_*.jsonl"))
    scores = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        scores[sample["doc"]["id"]] = [float(r[0]) for r in sample["filtered_resps"]]
    return scores


def run_lm_eval(model: Path, work: Path) -> tuple[float, dict[str, list[float]]]:
    tasks, out = lm_eval_task(work)
    command = [str(BIN / "lm_eval"), "--model", "hf", "--model_args",
               f"pretrained={model},dtype=float32", "--tasks", TASK, "--include_path", str(tasks),
               "--device", "cpu", "--batch_size", str(BATCH), "--log_samples", "--output_path", str(out)]
    seconds = _timed(command)
    return seconds, lm_eval_scores(out)


def run_forgetmenot(model: Path, work: Path) -> tuple[float, dict[str, str]]:
    db = work / f"fmn-{time.monotonic_ns()}.db"
    policy = work / "forgetmenot.yaml"
    policy.write_text(POLICY.format(db=db, batch=BATCH, model=model, suite=SUITE))
    command = [str(BIN / "forgetmenot"), "probe", "-c", str(policy), "--kind", "multiple_choice",
               "--split", "all"]
    seconds = _timed(command)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT item_id, output FROM item_result WHERE kind='multiple_choice'")
        return seconds, dict(rows.fetchall())


def _timed(command: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    began = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def compare(lm_scores: dict[str, list[float]], fmn_choice: dict[str, str]) -> dict[str, object]:
    by_id = {i["id"]: i for i in items()}
    agree, disagreements = 0, []
    for item_id, scores in lm_scores.items():
        choices = by_id[item_id]["choices"]
        assert isinstance(choices, list)
        lm_pick = choices[max(range(len(scores)), key=scores.__getitem__)]
        if lm_pick == fmn_choice.get(item_id):
            agree += 1
        else:
            disagreements.append({"item": item_id, "lm_eval": lm_pick,
                                  "forgetmenot": fmn_choice.get(item_id)})
    gold = {k: v["choices"][v["gold"]] for k, v in by_id.items()}  # type: ignore[index]
    return {"items": len(lm_scores), "agree": agree, "disagreements": disagreements,
            "accuracy_forgetmenot": sum(fmn_choice[k] == gold[k] for k in fmn_choice) / len(fmn_choice),
            "accuracy_lm_eval": sum(
                by_id[k]["choices"][max(range(len(s)), key=s.__getitem__)] == gold[k]  # type: ignore[index]
                for k, s in lm_scores.items()) / len(lm_scores)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from monitor.probing.weights import prepare_smollm2

    model = prepare_smollm2()
    times: dict[str, list[float]] = {"lm_eval": [], "forgetmenot": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            order = ["lm_eval", "forgetmenot"] if round_ % 2 == 0 else ["forgetmenot", "lm_eval"]
            for tool in order:
                if tool == "lm_eval":
                    seconds, lm_scores = run_lm_eval(model, work)
                else:
                    seconds, fmn_choice = run_forgetmenot(model, work)
                times[tool].append(seconds)
                print(f"round {round_ + 1}: {tool:<12} {seconds:6.1f} s", flush=True)
    write(times, compare(lm_scores, fmn_choice))


def write(times: dict[str, list[float]], agreement: dict[str, object]) -> None:
    median = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "what": "general-knowledge multiple_choice, all items, SmolLM2-135M-Instruct fp32, CPU, batch 16",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "seconds": times, "median_seconds": median,
        "speedup_end_to_end": median["lm_eval"] / median["forgetmenot"], **agreement,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "engine.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| | lm-evaluation-harness (`--model hf`) | forgetmenot |",
        "|---|---|---|",
        f"| end-to-end wall time, median of {len(times['lm_eval'])} | {median['lm_eval']:.1f} s | "
        f"{median['forgetmenot']:.1f} s |",
        f"| accuracy | {agreement['accuracy_lm_eval']:.3f} | {agreement['accuracy_forgetmenot']:.3f} |",
        f"| per-item prediction agreement | {agreement['agree']}/{agreement['items']} | |",
        f"| speed-up | | **{result['speedup_end_to_end']:.2f}×** |",
    ]
    (RESULTS / "engine.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
