"""Peak memory of `forgetmenot serve` per image flavour, for sizing the chart's `resources`.

`model`: the demo's policy shape (backend transformers, device auto, fp32, batch size 16, the six
demo suites) probing SmolLM2-135M-Instruct in process, two versions (two folders, so both are
loaded as two different versions would be). `served`: the same serve probing two versions of a
scripted OpenAI-compatible server (container/fake_openai.py) through the openai backend, which is
all the slim flavour can do; it checks that torch was never loaded into the process.

Each case starts a fresh `serve --run-now`, waits until every version has run every suite once
and the candidate is judged, and reports the process's peak RSS (VmHWM) and its RSS when idle
again. Results go to benchmarks/results/serve_memory.{json,md}.

    .venv/bin/python benchmarks/serve_memory.py               # both flavours, about 5 min on 2 cores
    .venv/bin/python benchmarks/serve_memory.py --flavour served
    .venv/bin/python benchmarks/serve_memory.py --flavour model --weights PATH   # your model: printed only
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
FORGETMENOT = Path(sys.executable).parent / "forgetmenot"
DEMO_SUITES = ["general-knowledge", "arithmetic", "refusal", "instruction-format", "fluency",
               "sentiment-json"]
SERVED_SUITES = ["refusal", "instruction-format"]  # generation suites: what the scripted server answers
GIB = 1024**3


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def linked_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def model_policy(work: Path, weights: Path | None) -> dict[str, Any]:
    from monitor.probing.weights import prepare_smollm2

    weights = weights or prepare_smollm2()
    versions = {}
    for name in ("v1", "v2"):
        folder = work / "models" / name  # a folder of links: a second version without a second copy
        folder.mkdir(parents=True)
        for item in weights.iterdir():
            (folder / item.name).symlink_to(item)
        versions[name] = {"path": str(folder)}
    backend = {"kind": "transformers", "device": "auto", "dtype": "float32", "batch_size": 16}
    return {"models": {"support-bot": {"backend": backend, "versions": versions, "baseline": "v1",
                                       "live": "v2", "deployer": {"kind": "registry"}}},
            "suites": [str(REPO / "probes" / s) for s in DEMO_SUITES]}


def served_policy(base_url: str) -> dict[str, Any]:
    backend = {"kind": "openai", "base_url": base_url, "timeout": "10s", "max_retries": 1}
    versions = {"v1": {"served_name": "served-bot"}, "v2": {"served_name": "served-bot"}}
    return {"models": {"served-bot": {"backend": backend, "versions": versions, "baseline": "v1",
                                      "live": "v2"}},
            "suites": [str(REPO / "probes" / s) for s in SERVED_SUITES]}


def progress(database: Path) -> tuple[int, int]:
    """(finished runs, verdicts) so far; (0, 0) before serve has made its tables."""
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            runs = db.execute("select count(*) from run where finished_at is not null").fetchone()[0]
            verdicts = db.execute("select count(*) from verdict").fetchone()[0]
    except sqlite3.OperationalError:
        return 0, 0
    return int(runs), int(verdicts)


def outcomes(database: Path) -> dict[str, int]:
    """Runs by status, and the item errors among them: a cycle of errors would measure nothing."""
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        rows = db.execute("select status, count(*), sum(error_count) from run group by status").fetchall()
    counts = {str(status): int(count) for status, count, _ in rows}
    counts["item_errors"] = sum(int(errors or 0) for _, _, errors in rows)
    return counts


def measure(flavour: str, timeout_s: float, weights: Path | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="serve-memory-") as tmp:
        work = Path(tmp)
        fake = None
        if flavour == "model":
            policy = model_policy(work, weights)
        else:
            script = REPO / "container" / "fake_openai.py"
            fake = subprocess.Popen([sys.executable, str(script), "--port", "0", "--model", "served-bot"],
                                    stdout=subprocess.PIPE, text=True)
            assert fake.stdout is not None
            base_url = fake.stdout.readline().split()[-1]
            policy = served_policy(base_url)
        database = work / "forgetmenot.db"
        policy |= {"database": f"sqlite:///{database}", "spool": str(work / "spool"),
                   "schedule": {"every": "24h"}, "policy": {"guards": {"dry_run": True}}}
        (work / "forgetmenot.yaml").write_text(yaml.safe_dump(policy))
        expected_runs = 2 * len(policy["suites"])
        home = os.environ.get("FORGETMENOT_HOME", str(Path.home() / ".cache" / "forgetmenot"))
        env = {**os.environ, "FORGETMENOT_HOME": home}  # where the demo model is prepared
        began = time.monotonic()
        serve = subprocess.Popen([str(FORGETMENOT), "serve", "--config", str(work / "forgetmenot.yaml"),
                                  "--port", "0", "--run-now"], env=env, cwd=work,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.monotonic() - began < timeout_s:
                time.sleep(0.5)
                if serve.poll() is not None:
                    raise RuntimeError(f"serve exited with {serve.returncode}")
                finished, verdicts = progress(database)
                if finished >= expected_runs and verdicts >= len(policy["suites"]):
                    break
            else:
                raise RuntimeError(f"not done after {timeout_s:.0f} s: {progress(database)}")
            took = time.monotonic() - began
            time.sleep(5)  # judged and stored: what stays while serve waits for the next tick
            peak = status_kib(serve.pid, "VmHWM") * 1024
            idle = status_kib(serve.pid, "VmRSS") * 1024
            torch = linked_torch(serve.pid)
            statuses = outcomes(database)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=60)
            if fake is not None:
                fake.terminate()
                fake.wait(timeout=10)
    return {"flavour": flavour, "suites": len(policy["suites"]), "runs": statuses,
            "seconds": round(took, 1), "peak_rss_bytes": peak, "idle_rss_bytes": idle, "torch_loaded": torch}


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| flavour | suites x versions | runs | peak RSS | RSS idle after | torch loaded | cycle |",
             "| --- | ---: | --- | ---: | ---: | --- | ---: |"]
    for r in results:
        peak, idle = r["peak_rss_bytes"] / GIB, r["idle_rss_bytes"] / GIB
        statuses = [f"{count} {status}" for status, count in r["runs"].items() if status != "item_errors"]
        runs = ", ".join([*statuses, f"{r['runs']['item_errors']} item errors"])
        lines.append(f"| {r['flavour']} | {r['suites']} x 2 | {runs} | {peak:.2f} GiB | {idle:.2f} GiB "
                     f"| {'yes' if r['torch_loaded'] else 'no'} | {r['seconds']} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flavour", choices=["model", "served", "both"], default="both")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--weights", type=Path,
                        help="a transformers folder of your model instead of the demo's (model flavour; "
                             "the results are then yours, so they are printed, not stored)")
    args = parser.parse_args()
    flavours = ["model", "served"] if args.flavour == "both" else [args.flavour]
    measured = {f: measure(f, args.timeout, args.weights) for f in flavours}
    if args.weights is not None:
        print(json.dumps(list(measured.values()), indent=1))
        return
    RESULTS.mkdir(exist_ok=True)
    stored = RESULTS / "serve_memory.json"
    kept = json.loads(stored.read_text()) if stored.is_file() else []  # one flavour at a time keeps the other
    results = [measured.pop(r["flavour"], r) for r in kept] + list(measured.values())
    stored.write_text(json.dumps(results, indent=1) + "\n")
    markdown = table(results)
    (RESULTS / "serve_memory.md").write_text(markdown)
    print(markdown, end="")


if __name__ == "__main__":
    main()
