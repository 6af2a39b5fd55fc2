"""The HTTP side under slow clients (issue 29): `/healthz` and `/metrics` while 1,000 connections
from 127.0.0.1 each send their request head one byte every 5 s, as a slow-loris client does.

The same measurement runs against two servers in one run: the threaded WSGI server of commit
7cf9f07 (checked out in a temporary git worktree), and today's ASGI app on uvicorn. Each server
runs in a process of its own, started by this file (`serve` role) with its tree on PYTHONPATH, on
a SQLite store holding a small fleet's verdicts, so `/metrics` renders a real exposition. This
process opens the slow connections (non-blocking, one thread sends every byte), waits until they
are all open, then asks `/healthz` and `/metrics` one after another for `--seconds`, each with a
5 s timeout: the median and the 99th percentile of each, and how many got no answer in time. Also
counted: slow connections the server closed while the load held (the head deadline at work).

    make bench-http     # writes benchmarks/results/slow_clients.{json,md}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
BEFORE = "7cf9f07"
ASK_TIMEOUT_S = 5.0
POLICY = """\
database: sqlite:///{db}
models:
{models}
suites: [probes/arithmetic]
"""


@dataclass
class Measured:
    server: str
    clients: int
    opened: int
    closed_by_server: int
    healthz_median_ms: float | None
    healthz_p99_ms: float | None
    healthz_failed: int
    healthz_asked: int
    metrics_median_ms: float | None
    metrics_p99_ms: float | None
    metrics_failed: int
    metrics_asked: int


# -- the server, in its own process ---------------------------------------------------------


def serve(folder: Path) -> None:
    """Started with one tree or the other on PYTHONPATH; prints its port, serves until stdin closes."""
    from monitor.policy.loading import load_config
    from monitor.service.http import Api, HttpServer
    from monitor.store import Store, Verdict

    config = load_config(folder / "forgetmenot.yaml")
    store = Store(config.database_url())
    for n in range(20):
        store.save_verdict(Verdict(model=f"bot-{n}", candidate="v2", baseline="v1", suite="arithmetic",
                                   capability="arithmetic", content_hash="h", phase="PASS",
                                   diagnosis="none", reason="bench"), [])
    api = Api(config, store)
    api.warm()
    server = HttpServer(api, port=0).start()
    print(server.port, flush=True)
    sys.stdin.read()
    server.stop()


def write_policy(folder: Path) -> None:
    import shutil

    shutil.copytree(REPO / "probes" / "arithmetic", folder / "probes" / "arithmetic")
    (folder / "w").mkdir()
    model = "{versions: {v1: {path: w}, v2: {path: w}}, baseline: v1, live: v2}"
    models = "\n".join(f"  bot-{n}: {model}" for n in range(20))
    (folder / "forgetmenot.yaml").write_text(POLICY.format(db=folder / "fmn.db", models=models))


@contextmanager
def server_process(tree: Path, folder: Path) -> Iterator[int]:
    env = {**os.environ, "PYTHONPATH": str(tree), "FORGETMENOT_HOME": str(folder)}
    command = [sys.executable, str(Path(__file__).resolve()), "serve", str(folder)]
    child = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             cwd=folder)
    assert child.stdout is not None and child.stdin is not None
    try:
        yield int(child.stdout.readline())
    finally:
        child.stdin.close()
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()


# -- the measurement ------------------------------------------------------------------------


def ask(port: int, path: str) -> float | None:
    """Milliseconds until the whole answer arrived, None if none came within ASK_TIMEOUT_S."""
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=ASK_TIMEOUT_S) as reply:
            reply.read()
    except OSError:
        return None
    return (time.perf_counter() - began) * 1000


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 2)


def measure(name: str, port: int, clients: int, seconds: float, every_s: float) -> Measured:
    # here, not at the top: the `serve` role runs this file on the older tree, which lacks it
    from monitor.testing.slowloris import SlowClients, accepted

    times: dict[str, list[float | None]] = {"/healthz": [], "/metrics": []}
    with SlowClients(port, clients, every_s) as slow:
        opened = accepted(slow.conns, within_s=15.0)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for path, taken in times.items():
                taken.append(ask(port, path))
        closed = slow.closed
    return Measured(name, clients, opened, closed, *_summary(times["/healthz"]), *_summary(times["/metrics"]))


def _summary(taken: list[float | None]) -> tuple[float | None, float | None, int, int]:
    answered = [t for t in taken if t is not None]
    median = round(statistics.median(answered), 2) if answered else None
    return median, percentile(answered, 0.99), len(taken) - len(answered), len(taken)


@contextmanager
def worktree(commit: str) -> Iterator[Path]:
    git = ["git", "-C", str(REPO), "worktree"]
    with tempfile.TemporaryDirectory(prefix="fmn-before-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run([*git, "add", "--detach", "-q", str(path), commit], check=True)
        try:
            yield path
        finally:
            subprocess.run([*git, "remove", "--force", str(path)], check=False)
            subprocess.run([*git, "prune"], check=False)


def run_one(name: str, tree: Path, clients: int, seconds: float, every_s: float) -> Measured:
    with tempfile.TemporaryDirectory(prefix="fmn-slow-") as tmp:
        folder = Path(tmp)
        write_policy(folder)
        with server_process(tree, folder) as port:
            return measure(name, port, clients, seconds, every_s)


def main(clients: int, seconds: float, every_s: float) -> list[Measured]:
    with worktree(BEFORE) as old:
        before = run_one(f"before ({BEFORE}, threaded WSGI)", old, clients, seconds, every_s)
    after = run_one("after (ASGI on uvicorn)", REPO, clients, seconds, every_s)
    return [before, after]


def report(rows: list[Measured], clients: int, seconds: float, every_s: float) -> None:
    RESULTS.mkdir(exist_ok=True)
    meta = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.machine(),
            "cpus": os.cpu_count(), "clients": clients, "seconds": seconds, "byte_every_s": every_s,
            "ask_timeout_s": ASK_TIMEOUT_S}
    kept = {**meta, "rows": [asdict(r) for r in rows]}
    (RESULTS / "slow_clients.json").write_text(json.dumps(kept, indent=2))
    lines = [f"# The HTTP side under {clients} slow clients", "",
             f"{meta['date']}, {meta['cpus']} CPUs; {clients} connections from 127.0.0.1 each sending its "
             f"request head one byte every {every_s:g} s; `/healthz` then `/metrics` asked one after "
             f"another for {seconds:g} s, each with a {ASK_TIMEOUT_S:g} s timeout (`make bench-http`).", "",
             "| server | slow connections open | closed by the server | /healthz median ms | p99 ms | "
             "no answer | /metrics median ms | p99 ms | no answer |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.server} | {r.opened} | {r.closed_by_server} | {_cell(r.healthz_median_ms)} | "
                     f"{_cell(r.healthz_p99_ms)} | {r.healthz_failed} of {r.healthz_asked} | "
                     f"{_cell(r.metrics_median_ms)} | {_cell(r.metrics_p99_ms)} | "
                     f"{r.metrics_failed} of {r.metrics_asked} |")
    (RESULTS / "slow_clients.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "serve"])
    parser.add_argument("folder", nargs="?", type=Path)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=5.0)
    args = parser.parse_args()
    if args.role == "serve":
        serve(args.folder)
    else:
        measured = main(args.clients, args.seconds, args.every)
        report(measured, args.clients, args.seconds, args.every)
