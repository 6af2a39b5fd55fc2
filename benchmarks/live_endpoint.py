"""Live-endpoint benchmark: forgetmenot's openai backend vs lm-evaluation-harness
`local-completions`, both against the same vLLM server, on the same items, in one run.

One vLLM (CPU, fp32, default settings) serves SmolLM2-135M-Instruct. Both tools score every
general-knowledge multiple-choice item end to end as a user runs them (a fresh process each),
with the same tokenizer folder. Settings compared:

- matched: both send 16 prompts per request with 4 requests in flight;
- lm-eval's defaults (1 prompt per request, 1 in flight) against forgetmenot's defaults.

Rounds alternate which tool goes first. Then generation throughput of forgetmenot's backend at
several concurrency levels. Written to benchmarks/results/live_endpoint.json and .md.

    make bench-live             # or: .venv/bin/python benchmarks/live_endpoint.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import BIN, RESULTS, SUITE, TASK, _timed, compare, lm_eval_scores, lm_eval_task

POLICY = """\
database: sqlite:///{db}
models:
  smollm2:
    backend: {{kind: openai, base_url: "{url}", tokenizer: {model}, dtype: float32,
               batch_size: {batch}, concurrency: {concurrent}}}
    versions:
      v1: {{served_name: smollm2}}
    baseline: v1
    live: v1
suites: [{suite}]
"""

SETTINGS = {"matched": {"batch": 16, "concurrent": 4}, "defaults": {"batch": 1, "concurrent": 1}}
FMN_DEFAULTS = {"batch": 16, "concurrent": 4}


def run_lm_eval(url: str, model: Path, work: Path, batch: int,
                concurrent: int) -> tuple[float, dict[str, list[float]]]:
    tasks, out = lm_eval_task(work)
    args = (f"model=smollm2,base_url={url}/completions,tokenizer={model},tokenizer_backend=huggingface,"
            f"tokenized_requests=True,num_concurrent={concurrent},max_retries=3")
    command = [str(BIN / "lm_eval"), "--model", "local-completions", "--model_args", args,
               "--tasks", TASK, "--include_path", str(tasks), "--batch_size", str(batch),
               "--log_samples", "--output_path", str(out)]
    seconds = _timed(command)
    return seconds, lm_eval_scores(out)


def run_forgetmenot(url: str, model: Path, work: Path, batch: int,
                    concurrent: int) -> tuple[float, dict[str, str]]:
    db = work / f"fmn-{time.monotonic_ns()}.db"
    policy = work / "forgetmenot.yaml"
    policy.write_text(POLICY.format(db=db, url=url, model=model, batch=batch, concurrent=concurrent,
                                    suite=SUITE))
    command = [str(BIN / "forgetmenot"), "probe", "-c", str(policy), "--kind", "multiple_choice",
               "--split", "all"]
    seconds = _timed(command)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT item_id, output, error_kind FROM item_result "
                            "WHERE kind='multiple_choice'")
        found = rows.fetchall()
    errors = [r for r in found if r[2]]
    if errors:
        raise SystemExit(f"forgetmenot recorded {len(errors)} errors, e.g. {errors[0]}")
    return seconds, {item_id: output for item_id, output, _ in found}


def scoring(url: str, model: Path, work: Path, rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, setting in SETTINGS.items():
        fmn_setting = setting if name == "matched" else FMN_DEFAULTS
        times: dict[str, list[float]] = {"lm_eval": [], "forgetmenot": []}
        lm_scores: dict[str, list[float]] = {}
        fmn_choice: dict[str, str] = {}
        for round_ in range(rounds if name == "matched" else 1):
            order = ["lm_eval", "forgetmenot"] if round_ % 2 == 0 else ["forgetmenot", "lm_eval"]
            for tool in order:
                if tool == "lm_eval":
                    seconds, lm_scores = run_lm_eval(url, model, work, **setting)
                else:
                    seconds, fmn_choice = run_forgetmenot(url, model, work, **fmn_setting)
                times[tool].append(seconds)
                print(f"{name} round {round_ + 1}: {tool:<12} {seconds:6.1f} s", flush=True)
        medians = {tool: statistics.median(values) for tool, values in times.items()}
        out[name] = {"lm_eval_setting": setting, "forgetmenot_setting": fmn_setting, "times_s": times,
                     "median_s": medians, "speedup": medians["lm_eval"] / medians["forgetmenot"],
                     **compare(lm_scores, fmn_choice)}
    return out


def generation(url: str, model: Path, levels: list[int], count: int,
               outputs: bool = False) -> list[dict[str, Any]]:
    """Items per second through forgetmenot's `openai` backend at each level of requests in
    flight; with `outputs`, each item's answer too (the generation benchmark compares them)."""
    from monitor.policy.suites import load_suite
    from monitor.probing.backends.endpoint import Endpoint
    from monitor.probing.backends.openai import OpenAIBackend
    from monitor.probing.backends.tokens import LocalTokenizer
    from monitor.probing.run import score_kind
    from monitor.vocabulary import Kind

    suite = load_suite(SUITE)
    tokenizer = LocalTokenizer(str(model))
    rows: list[dict[str, Any]] = []
    for level in levels:
        backend = OpenAIBackend(Endpoint(url, concurrency=level), tokenizer, model="smollm2")
        began = time.perf_counter()
        results = score_kind(backend, suite, Kind.GENERATE_UNTIL, suite.items[:count])
        seconds = time.perf_counter() - began
        assert not any(r.error_kind for r in results), [r.error for r in results if r.error_kind][:1]
        tokens = sum(len(tokenizer.encode(r.output or "")) for r in results)
        rows.append({"concurrency": level, "items": len(results), "seconds": seconds,
                     "items_per_s": len(results) / seconds, "answer_tokens_per_s": tokens / seconds})
        if outputs:
            rows[-1]["outputs"] = {r.item_id: r.output or "" for r in results}
        print(f"generation at concurrency {level}: {len(results) / seconds:.2f} items/s", flush=True)
    return rows


def write(result: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "live_endpoint.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Live-endpoint benchmark ({result['machine']}, vLLM {result['server']}, SmolLM2-135M-Instruct "
             f"fp32, {result['scoring']['matched']['items']} general-knowledge multiple-choice items)", "",
             "| setting | lm-eval local-completions | forgetmenot openai | speed-up | same predictions |",
             "|---|---|---|---|---|"]
    for name, row in result["scoring"].items():
        lm, fmn = row["lm_eval_setting"], row["forgetmenot_setting"]
        lines.append(f"| {name} (lm-eval {lm['batch']}×{lm['concurrent']}, forgetmenot "
                     f"{fmn['batch']}×{fmn['concurrent']}) | {row['median_s']['lm_eval']:.1f} s | "
                     f"{row['median_s']['forgetmenot']:.1f} s | {row['speedup']:.2f}× | "
                     f"{row['agree']}/{row['items']} |")
    lines += ["", "prompts per request × requests in flight; median of the rounds.", "",
              "| concurrency | items/s | answer tokens/s |", "|---|---|---|"]
    for row in result["generation"]:
        lines.append(f"| {row['concurrency']} | {row['items_per_s']:.2f} | "
                     f"{row['answer_tokens_per_s']:.1f} |")
    (RESULTS / "live_endpoint.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--generate", type=int, default=96, help="generation items per level")
    parser.add_argument("--levels", default="1,2,4,8,16")
    args = parser.parse_args()
    from monitor.probing.weights import prepare_smollm2
    from monitor.testing.servers import VLLM, vllm_server

    model = prepare_smollm2()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with vllm_server(model, work) as server:
            result = {"machine": f"{platform.machine()}, {platform.system()}",
                      "server": VLLM.packages[0], "rounds": args.rounds,
                      "scoring": scoring(server.base_url, model, work, args.rounds),
                      "generation": generation(server.base_url, model,
                                               [int(x) for x in args.levels.split(",")], args.generate)}
    write(result)


if __name__ == "__main__":
    main()
