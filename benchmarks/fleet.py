"""Served-fleet benchmark (issue 17): how long one monitor's cycle takes over 1, 10 and 50 served
versions, before and after versions ran at once.

The fleet is shaped like a real one: each model has a baseline and a live version (one version:
a model whose live is its baseline), and each endpoint hosts five models (one vLLM serving LoRA
adapters). The endpoints are scripted OpenAI-compatible servers on 127.0.0.1 that answer exactly
what the openai backend asks (`/v1/models`, next-token and echoed log-probabilities on
`/v1/completions`, `/v1/chat/completions`), each request after about 150 ms plus 4 ms per prompt,
with jitter, any number at once (as a batching server does). The monitor tokenizes with a local
byte-level tokenizer, as `backend.tokenizer` lets it.

A cycle is timed from `Monitor.start(run_now=True)` (as `serve` does: one job per watched version,
all fired at once) until every watched version has a finished run of every suite in the database.
"Before" is commit e6d9cec, checked out in a temporary git worktree and driven by this same file
in a subprocess; "after" is the working tree, with the executor's default `endpoint_runs` and
with enough of them that no version waits. The slowest version of each fleet is then run alone.
Every endpoint also counts the most requests it answered at once. Before, the backend's
`concurrency` (4) bounded requests to one base URL across all its versions; after, it bounds each
run, and `endpoint_runs` × `concurrency` the endpoint. So the fleets of 10 and 50 are also run
before with the endpoint's bound at 40, the budget the "no version waits" cycle after has
(10 runs × 4): the same load on the server either way.

    make bench-fleet     # writes benchmarks/results/fleet.{json,md}
"""

from __future__ import annotations

import json
import logging
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BEFORE = "e6d9cec"
SIZES = (1, 10, 50)
MODELS_PER_ENDPOINT = 5
WIDE = 2 * MODELS_PER_ENDPOINT  # endpoint_runs at which no version on an endpoint waits for a run slot
SUITES = ("arithmetic", "refusal")
START = "<|endoftext|>"


# -- the scripted server ------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Seconds one request takes: `base_s` plus `per_prompt_s` per prompt, times 1 ± `jitter`."""

    base_s: float = 0.150
    per_prompt_s: float = 0.004
    jitter: float = 0.2


def logprob(context: list[int], token: int) -> float:
    """A log-probability that depends only on the tokens, so every version scores the same."""
    return -0.05 - zlib.crc32(json.dumps([context[-8:], token]).encode()) % 4000 / 1000


class ScriptedServer:
    """One OpenAI-compatible endpoint serving `names`; counts requests per (route, model), and
    the most it was answering at once (`peak`, set back to 0 by the caller between cycles)."""

    def __init__(self, names: list[str], latency: Latency = Latency(), seed: int = 0) -> None:
        self.names, self.latency = set(names), latency
        self.requests: dict[tuple[str, str], int] = {}
        self.busy = self.peak = 0
        self._random, self._lock = random.Random(seed), threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as httpx pools connections
            disable_nagle_algorithm = True  # else headers and body wait on delayed ACKs (40 ms)

            def do_GET(self) -> None:
                server.answer(self, self.path, {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.answer(self, self.path, json.loads(body))

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = _Listener(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler: BaseHTTPRequestHandler, path: str, body: dict[str, Any]) -> None:
        model = str(body.get("model", ""))
        with self._lock:
            self.requests[path, model] = self.requests.get((path, model), 0) + 1
        if path == "/v1/models":
            listed = [{"id": name, "max_model_len": 2048} for name in sorted(self.names)]
            return _send(handler, 200, {"data": listed})
        routes = {"/v1/completions": self.completions, "/v1/chat/completions": self.chat}
        if path not in routes or model not in self.names:
            return _send(handler, 404, {"error": f"no {path} for model {model!r}"})
        reply, prompts = routes[path](body)
        with self._lock:
            self.busy += 1
            self.peak = max(self.peak, self.busy)
        time.sleep(self._seconds(prompts))
        with self._lock:
            self.busy -= 1
        _send(handler, 200, reply)

    def _seconds(self, prompts: int) -> float:
        with self._lock:
            spread = self._random.uniform(1 - self.latency.jitter, 1 + self.latency.jitter)
        return (self.latency.base_s + self.latency.per_prompt_s * prompts) * spread

    def completions(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        prompts = body["prompt"]
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if "logprob_token_ids" in body:
            choices = [_next_tokens(ids, body["logprob_token_ids"]) for ids in prompts]
        else:
            choices = [_echo(p) if body.get("echo") else _generated(p) for p in prompts]
        usage = {"prompt_tokens": sum(len(p) for p in prompts if not isinstance(p, str))}
        return {"choices": [{"index": i, **c} for i, c in enumerate(choices)], "usage": usage}, len(prompts)

    def chat(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        asked = " ".join(str(m.get("content", "")) for m in body.get("messages", [])).lower()
        text = "I'm sorry, but I can't help with that." if "weapon" in asked else "OK"
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}, 1


class _Listener(ThreadingHTTPServer):
    request_queue_size = 256  # a fleet opens many connections at once
    daemon_threads = True


def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


def _next_tokens(ids: list[int], asked: list[int]) -> dict[str, Any]:
    """vLLM's `logprob_token_ids`: the log-probability of each named token after the prompt."""
    return {"logprobs": {"top_logprobs": [{f"token_id:{t}": logprob(ids, t) for t in asked}]}}


def _generated(text: str) -> dict[str, Any]:
    """One generated token (a space) after a text prompt, one byte per token."""
    return {"text": " ", "logprobs": {"tokens": [" "], "token_logprobs": [logprob(list(text.encode()), 32)],
                                      "text_offset": [len(text)]}}


def _echo(prompt: str | list[int]) -> dict[str, Any]:
    """The prompt's own log-probabilities (none for its first token), then one generated token."""
    ids = [*(prompt.encode() if isinstance(prompt, str) else prompt), 32]
    tokens = [chr(t) if isinstance(prompt, str) else f"token_id:{t}" for t in ids]
    values = [None, *(logprob(ids[:k], ids[k]) for k in range(1, len(ids)))]
    return {"logprobs": {"tokens": tokens, "token_logprobs": values, "text_offset": list(range(len(ids)))}}


def write_tokenizer(folder: Path) -> Path:
    """A byte-level tokenizer (one token per byte, no merges) for `backend.tokenizer`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {START: 0, **{char: i + 1 for i, char in enumerate(alphabet)}}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": START}))
    return folder


# -- the fleet and its policy ---------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    name: str
    base_url: str
    versions: tuple[str, ...]  # baseline first; one version: live is the baseline

    def served(self, version: str) -> str:
        return f"{self.name}-{version}"


def fleet(versions: int, urls: list[str], per_endpoint: int = MODELS_PER_ENDPOINT) -> list[Model]:
    """`versions` watched versions: models of a baseline and a live, `per_endpoint` per URL."""
    if versions == 1:
        return [Model("m00", urls[0], ("v1",))]
    return [Model(f"m{i:02d}", urls[i // per_endpoint], ("v1", "v2")) for i in range(versions // 2)]


def served_names(models: list[Model], url: str) -> list[str]:
    return [m.served(v) for m in models if m.base_url == url for v in m.versions]


def write_policy(folder: Path, models: list[Model], tokenizer: Path, suites: tuple[str, ...] = SUITES,
                 endpoint_runs: int | None = None, concurrency: int | None = None) -> Path:
    """The policy `serve` would read; an `executor` block only when `endpoint_runs` is given
    (the code before the change rejects the key); `concurrency` is the backend's requests in
    flight to one endpoint (left out: the default, 4)."""
    lines = [f"database: sqlite:///{folder}/fleet.db", f"spool: {folder}/spool",
             "schedule: {every: 1h, jitter: 0s}"]
    if endpoint_runs is not None:
        lines.append(f"executor: {{kind: local, endpoint_runs: {endpoint_runs}}}")
    lines.append("models:")
    for m in models:
        versions = ", ".join(f"{v}: {{served_name: {m.served(v)}}}" for v in m.versions)
        backend = f'kind: openai, base_url: "{m.base_url}", tokenizer: {tokenizer}, dtype: float32'
        backend += f", concurrency: {concurrency}" if concurrency else ""
        lines += [f"  {m.name}:",
                  f"    backend: {{{backend}}}",
                  f"    versions: {{{versions}}}",
                  f"    baseline: {m.versions[0]}",
                  f"    live: {m.versions[-1]}"]
    lines.append(f"suites: [{', '.join(str(REPO / 'probes' / s) for s in suites)}]")
    lines.append("policy: {guards: {dry_run: true}}")
    path = folder / "forgetmenot.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- one cycle, timed -------------------------------------------------------------------------


def drive(policy: Path, timeout_s: float = 600.0, record_suites: bool = True) -> dict[str, Any]:
    """Start the monitor on `policy`, wait until every watched version has a finished run of
    every suite (or every firing has returned), stop it; the wall time and, per version, its runs
    as the database has them. `record_suites` puts the suites in the database first, as a fleet
    that has run before has them (before 1bfd9ec, versions starting at once on a fresh database
    raced to record them, and all but one failed)."""
    import monitor
    from monitor.service.scheduler import open_monitor

    mon = open_monitor(policy)
    watched, suites = mon.watched(), [s.name for s in mon.suites]
    for suite in mon.suites if record_suites else []:
        mon.store.ensure_suite(suite.name, suite.spec.version, suite.capability, suite.content_hash)
    returned = _count_firings(mon)
    began, cpu = time.time(), time.process_time()
    mon.start(run_now=True)
    while not (done := _finished(mon.store.runs(), watched, suites)) and len(returned) < len(watched) \
            and time.time() - began < timeout_s:
        time.sleep(0.05)
    wall, cpu = time.time() - began, time.process_time() - cpu
    mon.stop(wait=True)
    done = _finished(mon.store.runs(), watched, suites)
    runs = {f"{r.model}/{r.version}/{r.suite}": r for r in mon.store.runs()}
    versions = {f"{m}/{v}": _version(runs, f"{m}/{v}", suites, began) for m, v in watched}
    mon.store.close()
    clean = done and all(r.status == "complete" and not r.error_count for r in runs.values())
    return {"wall_s": wall, "cpu_s": cpu, "complete": done, "clean": clean,
            "code": str(Path(monitor.__file__).parent.parent), "versions": versions}


def _count_firings(mon: Any) -> list[tuple[str, str]]:
    """The firings that have returned, whatever became of them (set before `start` adds jobs)."""
    returned: list[tuple[str, str]] = []
    fire = mon.fire

    def counted(model: str, version: str) -> None:
        try:
            fire(model, version)
        finally:
            returned.append((model, version))

    mon.fire = counted
    return returned


def _finished(runs: list[Any], watched: list[tuple[str, str]], suites: list[str]) -> bool:
    ended = {(r.model, r.version, r.suite) for r in runs if r.finished_at is not None}
    return all((m, v, s) in ended for m, v in watched for s in suites)


def _version(runs: dict[str, Any], key: str, suites: list[str], began: float) -> dict[str, Any]:
    own = [runs[f"{key}/{s}"] for s in suites if f"{key}/{s}" in runs]
    start = min((_at(r.started_at) for r in own), default=began)
    end = max((_at(r.finished_at) for r in own if r.finished_at), default=start)
    kept = {r.suite: {"status": r.status, "items": r.item_count, "errors": r.error_count} for r in own}
    return {"start_s": start - began, "span_s": end - start, "runs": kept}


def _at(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def drive_in(code: Path, policy: Path) -> dict[str, Any]:
    """`drive` in a fresh Python whose `monitor` is the one under `code`."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "drive", str(policy)], env=env,
                          cwd=policy.parent, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the driver failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    if Path(result["code"]).resolve() != code.resolve():
        raise RuntimeError(f"the driver ran the monitor from {result['code']}, not from {code}")
    return result


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """`commit` checked out in a temporary git worktree, removed afterwards."""
    git = ["git", "-C", str(REPO), "worktree"]
    with tempfile.TemporaryDirectory(prefix="fmn-before-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run([*git, "add", "--detach", "-q", str(path), commit], check=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "remove", "--force", str(path)], check=False)
            subprocess.run([*git, "prune"], check=False)


# -- the benchmark --------------------------------------------------------------------------


@dataclass
class Bench:
    """The endpoints (shared by every measurement), the code before, the tokenizer folder."""

    servers: list[ScriptedServer]
    old: Path
    tokenizer: Path

    def measure(self, code: Path, models: list[Model], label: str, endpoint_runs: int | None = None,
                concurrency: int | None = None) -> dict[str, Any]:
        used = [s for s in self.servers if s.base_url in {m.base_url for m in models}]
        for server in used:
            server.peak = 0
        with tempfile.TemporaryDirectory(prefix="fmn-fleet-") as tmp:
            policy = write_policy(Path(tmp), models, self.tokenizer, endpoint_runs=endpoint_runs,
                                  concurrency=concurrency)
            result = drive_in(code, policy)
        result.update(endpoint_runs=endpoint_runs, concurrency=concurrency,
                      peak_in_flight=max(s.peak for s in used))
        print(f"{len(result['versions']):>3} versions, {label}: {result['wall_s']:.1f} s, clean: "
              f"{result['clean']}, {result['peak_in_flight']} requests at once at most", flush=True)
        return result

    def slowest_alone(self, models: list[Model], cycle: dict[str, Any],
                      concurrency: int | None = None) -> dict[str, Any]:
        """The version whose runs took longest in `cycle`, run alone (one watched version) by the
        working tree's code."""
        key = max(cycle["versions"], key=lambda k: cycle["versions"][k]["span_s"])
        name, version = key.split("/")
        model = next(m for m in models if m.name == name)
        alone = [Model(name, model.base_url, (version,))]
        return {"version": key, **self.measure(REPO, alone, f"{key} alone", concurrency=concurrency)}

    def size(self, versions: int) -> dict[str, Any]:
        models = fleet(versions, [s.base_url for s in self.servers])
        row: dict[str, Any] = {"versions": versions, "models": len(models),
                               "endpoints": len({m.base_url for m in models})}
        row["before"] = self.measure(self.old, models, "before")
        row["after_default"] = self.measure(REPO, models, "after, default")
        row["after_wide"] = self.measure(REPO, models, "after, no version waits", endpoint_runs=WIDE)
        row["slowest_alone"] = self.slowest_alone(models, row["after_default"])
        if versions > 1:
            row["raised"] = self.raised(models, row)
        return row

    def raised(self, models: list[Model], row: dict[str, Any]) -> dict[str, Any]:
        """Before, with the endpoint's one request bound raised to the budget the after code's
        "no version waits" cycle has (`WIDE` runs × 4), against that cycle."""
        bound = 4 * WIDE
        return {"concurrency": bound,
                "before": self.measure(self.old, models, f"before, concurrency {bound}", concurrency=bound),
                "after": row["after_wide"], "slowest_alone": row["slowest_alone"]}


def main() -> None:
    began = time.time()
    endpoints = max(SIZES) // 2 // MODELS_PER_ENDPOINT
    shape = fleet(max(SIZES), [f"endpoint-{i}" for i in range(endpoints)])
    servers = [ScriptedServer(served_names(shape, f"endpoint-{i}"), seed=i) for i in range(endpoints)]
    try:
        with tempfile.TemporaryDirectory(prefix="fmn-tok-") as tmp, worktree(BEFORE) as old:
            bench = Bench(servers, old, write_tokenizer(Path(tmp)))
            rows = [bench.size(versions) for versions in SIZES]
    finally:
        for server in servers:
            server.stop()
    results = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": machine(),
               "command": "make bench-fleet", "before": BEFORE, "after": after_code(), "suites": list(SUITES),
               "latency": Latency().__dict__, "models_per_endpoint": MODELS_PER_ENDPOINT,
               "benchmark_s": time.time() - began, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "fleet.md").write_text(markdown(results))
    print(markdown(results))


def after_code() -> str:
    """The working tree's commit, and whether the monitor's code differs from it."""
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "monitor"],
                             capture_output=True, text=True, check=True).stdout.strip()
    return f"{head} with uncommitted changes to monitor/" if changed else head


def machine() -> str:
    return (f"{platform.machine()}, {platform.system()}, {os.cpu_count()} CPU cores, "
            f"Python {platform.python_version()}")


def markdown(r: dict[str, Any]) -> str:
    lat = r["latency"]
    head = (f"Served-fleet benchmark: `{r['command']}`, {r['date']}, {r['machine']}. Suites "
            f"{' and '.join(r['suites'])}; scripted OpenAI-compatible servers on 127.0.0.1, "
            f"{lat['base_s'] * 1000:.0f} ms per request + {lat['per_prompt_s'] * 1000:.0f} ms per prompt "
            f"(±{lat['jitter']:.0%}), {r['models_per_endpoint']} models (baseline + live) per endpoint. "
            f"Before: {r['before']}; after: {r['after']}. Whole benchmark {r['benchmark_s'] / 60:.1f} min.")
    table = ["| versions (models, endpoints) | before | after, default endpoint_runs | after, no version "
             "waits | slowest single run | after / slowest | speed-up after vs before | requests at once "
             "per endpoint |", "|---|---|---|---|---|---|---|---|"]
    raised = [row for row in r["rows"] if "raised" in row]
    second = ["| versions (models, endpoints) | requests at once per endpoint | before (one bound of 40) | "
              "after (10 runs × 4) | slowest single run | after / slowest | speed-up after vs before | "
              "monitor's CPU, after |", "|---|---|---|---|---|---|---|---|",
              *(_raised(row) for row in raised)]
    return "\n".join([head, "", *table, *(_row(row) for row in r["rows"]), "", NOTE, "", RAISED, "",
                      *second, ""])


def _row(row: dict[str, Any]) -> str:
    cycles = before, default, wide = row["before"], row["after_default"], row["after_wide"]
    alone = row["slowest_alone"]["wall_s"]
    flags = "" if all(c["clean"] for c in cycles) else " (some runs unfinished or with errors)"
    return (f"| {row['versions']} ({row['models']}, {row['endpoints']}){flags} | {before['wall_s']:.1f} s | "
            f"{default['wall_s']:.1f} s | {wide['wall_s']:.1f} s (endpoint_runs {wide['endpoint_runs']}) | "
            f"{alone:.1f} s | {default['wall_s'] / alone:.2f}× / {wide['wall_s'] / alone:.2f}× | "
            f"{before['wall_s'] / min(default['wall_s'], wide['wall_s']):.2f}× | "
            f"{' / '.join(str(c['peak_in_flight']) for c in cycles)} |")


def _raised(row: dict[str, Any]) -> str:
    raised = row["raised"]
    before, after, alone = (raised[k]["wall_s"] for k in ("before", "after", "slowest_alone"))
    flags = "" if raised["before"]["clean"] and raised["after"]["clean"] else " (some runs not clean)"
    return (f"| {row['versions']} ({row['models']}, {row['endpoints']}){flags} | {raised['concurrency']} | "
            f"{before:.1f} s | {after:.1f} s | {alone:.1f} s | {after / alone:.2f}× | "
            f"{before / after:.2f}× | {raised['after']['cpu_s'] / after:.1f} cores |")


RAISED = ("The same load on each server, 40 requests at once: before, one bound of 40 shared by every "
          "version on the endpoint (`concurrency: 40`); after, `endpoint_runs: 10` runs of "
          "`concurrency: 4` each (the after code bounds requests per run, and the endpoint at the product):")
NOTE = ("Cycle: from `Monitor.start(run_now=True)` until every watched version has a finished run of "
        "every suite in the database. Slowest single run: the version that took longest in the "
        "after-default cycle, run alone by the after code. After / slowest: default / no version waits; "
        "speed-up: before over the faster after; requests at once: the most one endpoint answered at "
        "once, before / after default / after no version waits. One cycle each; every version's runs "
        "are in fleet.json.")


if __name__ == "__main__":
    if sys.argv[1:2] == ["drive"]:
        logging.basicConfig(level=logging.ERROR)
        print(json.dumps(drive(Path(sys.argv[2]))), flush=True)
    else:
        main()
