"""The fault matrix: a real `forgetmenot serve` on a PostgreSQL of its own, probing a real
llama.cpp server through a proxy that misbehaves on request, while the harness breaks things.

Each fault runs in a fresh database: a healthy cycle first (a verdict exists), then the fault for
a while, then healing, then the wait for a new verdict. Afterwards the database is read for what
matters: FAIL verdicts and rollbacks (the two models are the same weights, so any is false),
items stored, items lost (left in the spool or its quarantine, or in runs still `running`) and
items stored twice, duplicated actions and slots worked twice, and the time from healing to the
next verdict. Throughout, `/healthz` is asked twice a second (each unanswered ask is counted), and
each monitor's stop on SIGTERM is timed against Kubernetes' default grace period.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from monitor.testing.faults import FaultProxy
from monitor.testing.postgres import TempPostgres
from monitor.testing.slowloris import SlowClients
from monitor.testing.stack import free_port
from monitor.testing.vitals import HealthWatch, stopped_within

ITEMS = 24
GRACE_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds
SLOW_CLIENTS = 1000
POLICY = """\
database: {database}
spool: {spool}
schedule: {{every: {every}s}}
models:
  bot:
    backend: {{kind: openai, base_url: "{url}", tokenizer: {tokenizer}, dtype: float32, batch_size: 8,
               concurrency: 2, timeout: 3s, max_retries: 1}}
    versions: {{v1: {{served_name: smollm2}}, v2: {{served_name: smollm2}}}}
    baseline: v1
    live: v2
    deployer: {{kind: registry, path: live}}
suites: [probes/gk{items}]
policy:
  defaults: {{min_items: 20}}
  on_knowledge_loss: [alert, rollback]
  on_alignment_loss: [alert, rollback]
"""


@dataclass
class Outcome:
    fault: str
    must: str
    did: str = ""
    survived: bool = False
    false_fails: int = 0
    false_rollbacks: int = 0
    items_stored: int = 0
    items_lost: int = 0
    items_stored_twice: int = 0
    duplicated_actions: int = 0
    slots_worked_twice: int = 0
    health_unanswered: int = 0
    slowest_stop_s: float = 0.0
    recover_s: float | None = None
    log: list[str] = field(default_factory=list)


@dataclass
class Fault:
    name: str
    must: str
    inject: Callable[[Harness], None]
    heal: Callable[[Harness], None]
    replicas: int = 1
    spool_broken: bool = False
    hold_s: float = 12.0


class Harness:
    """One fault's world: a database in the shared cluster, a folder, serve processes."""

    def __init__(self, pg: TempPostgres, proxy: FaultProxy, tokenizer: Path, work: Path, fault: Fault,
                 every: int) -> None:
        self.pg, self.proxy, self.work, self.fault = pg, proxy, work, fault
        self.database = pg.create(f"chaos_{fault.name}")
        # One engine for every poll; pre-ping replaces connections a killed database cut.
        self.engine = create_engine(self.database, pool_pre_ping=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.stops_s: list[float] = []  # how long each monitor took to stop on SIGTERM
        self.health = HealthWatch()
        self.held: list[SlowClients] = []  # what a fault keeps open while it holds
        _suite(work)
        spool = work / "spool"
        if fault.spool_broken:
            spool.write_text("a file where the spool folder should be\n")
        self.policy = work / "forgetmenot.yaml"
        self.policy.write_text(POLICY.format(database=self.database, spool=spool, every=every,
                                             url=proxy.base_url, tokenizer=tokenizer, items=ITEMS))

    def serve(self) -> subprocess.Popen[bytes]:
        port = free_port()
        with (self.work / f"serve-{len(self.procs)}.log").open("wb") as log:  # the child keeps its copy
            proc = subprocess.Popen([sys.executable, "-m", "monitor.cli.app", "serve", "-c",
                                     str(self.policy), "--port", str(port), "--run-now",
                                     "--stale-after", "6"], stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.ports.append(port)
        self.health.ports.append(port)
        return proc

    def forget(self, proc: subprocess.Popen[bytes]) -> None:
        """A monitor the fault itself stops: its port is no longer asked for health."""
        self.health.forget(self.ports[self.procs.index(proc)])

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
        self.engine.dispose()

    def stop(self) -> None:
        """SIGTERM to every monitor still running, each stop timed; one that outlives twice the
        grace period is killed (Kubernetes would have killed it at the grace period)."""
        self.health.stop()
        for held in self.held:
            held.__exit__()
        self.held.clear()
        began = time.monotonic()
        running = [proc for proc in self.procs if proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for proc in running:
            self.stops_s.append(stopped_within(proc, began, 2 * GRACE_S))

    def log_lines(self, last: int | None = None) -> list[str]:
        """The serve processes' logs, one after another; with `last`, only each one's last lines."""
        lines = []
        for log in sorted(self.work.glob("serve-*.log")):
            found = log.read_text(errors="replace").splitlines()
            lines += found[-last:] if last else found
        return lines

    def query(self, sql: str) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(text(sql)).all())
        except Exception:
            return []  # the database is down: that is what some faults do

    def wait_for(self, sql: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.query(sql):
                return True
            time.sleep(0.5)
        return False


def _suite(work: Path) -> None:
    source = Path(__file__).parents[2] / "probes" / "general-knowledge" / "items.jsonl"
    folder = work / "probes" / f"gk{ITEMS}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(source.read_text().splitlines(keepends=True)[:ITEMS]))
    (folder / "suite.yaml").write_text(
        f"name: gk{ITEMS}\nversion: 1\ncapability: general-knowledge\nitems: items.jsonl\n"
        "split: {recovery_fraction: 0.0, seed: 0}\n"
        "kinds:\n  generate_until:\n    doc_to_text: \"{question} Answer in a few words.\"\n"
        "    scorer: contains\n    max_new_tokens: 12\n    until: []\n")


def run_fault(pg: TempPostgres, proxy: FaultProxy, tokenizer: Path, work: Path, fault: Fault,
              every: int = 6, settle_s: float = 120.0) -> Outcome:
    out = Outcome(fault.name, fault.must)
    with Harness(pg, proxy, tokenizer, work, fault, every) as world:
        for _ in range(fault.replicas):
            world.serve()
        if not world.wait_for("SELECT id FROM verdict WHERE phase <> 'ERROR'", settle_s):
            out.did = "no healthy verdict before the fault: the harness could not start"
            out.log = world.log_lines(last=20)
            return out
        world.health.start()
        fault.inject(world)
        time.sleep(fault.hold_s)
        fault.heal(world)
        healed = time.time()
        found = world.wait_for(f"SELECT id FROM verdict WHERE created_at > (to_timestamp({healed}) AT TIME "
                               "ZONE 'UTC') AND phase <> 'ERROR'", settle_s)
        out.recover_s = round(time.time() - healed, 1) if found else None
        world.stop()  # measured once every monitor has stopped and marked its runs
        _measure(world, out)
    return out


def _measure(world: Harness, out: Outcome) -> None:
    q = world.query
    out.false_fails = len(q("SELECT id FROM verdict WHERE phase = 'FAIL'"))
    out.false_rollbacks = len(q("SELECT id FROM action WHERE kind = 'rollback'"))
    out.duplicated_actions = sum(n - 1 for (n,) in q(
        "SELECT count(*) FROM action WHERE verdict_id IS NOT NULL GROUP BY verdict_id, kind "
        "HAVING count(*) > 1"))
    out.items_stored = sum(n for (n,) in q("SELECT count(*) FROM item_result"))
    out.items_stored_twice = sum(n - 1 for (n,) in q(
        "SELECT count(*) FROM item_result GROUP BY run_id, item_id, kind HAVING count(*) > 1"))
    running = sum(n for (n,) in q("SELECT count(*) FROM run WHERE status = 'running'"))
    out.items_lost = _spooled(world.work / "spool") + running * ITEMS
    out.health_unanswered = world.health.unanswered
    out.slowest_stop_s = max(world.stops_s, default=0.0)
    claims = dict(q("SELECT split_part(name, ':', 3), count(*) FROM claim WHERE name LIKE 'probe:%' "
                    "GROUP BY 1"))
    runs = dict(q("SELECT version, count(*) FROM run GROUP BY version"))
    out.slots_worked_twice = sum(max(0, n - claims.get(k, 0)) for k, n in runs.items())
    statuses = q("SELECT status, count(*) FROM run GROUP BY status ORDER BY status")
    phases = q("SELECT phase, count(*) FROM verdict GROUP BY phase ORDER BY phase")
    out.did = ("runs " + ", ".join(f"{s} {n}" for s, n in statuses) + "; verdicts "
               + ", ".join(f"{p} {n}" for p, n in phases)
               + (f"; recovered in {out.recover_s:g} s" if out.recover_s is not None
                  else "; never recovered"))
    out.survived = (out.recover_s is not None and out.false_fails == 0 and out.false_rollbacks == 0
                    and out.items_lost == 0 and out.items_stored_twice == 0 and out.duplicated_actions == 0
                    and out.slots_worked_twice == 0 and out.health_unanswered == 0
                    and out.slowest_stop_s <= GRACE_S)
    lines = world.log_lines()
    spooled_runs = sum("results measured so far are saved in" in line for line in lines)
    replays = sum(" replayed " in line and "from the spool" in line for line in lines)
    reaped = sum("marked" in line and "as interrupted" in line for line in lines)
    facts = [f"{spooled_runs} run(s) spooled" if spooled_runs else "",
             f"{replays} replay(s)" if replays else "",
             f"{reaped} reaping(s) of a dead monitor's runs" if reaped else "",
             f"stopped on SIGTERM within {out.slowest_stop_s:g} s",
             f"/healthz unanswered {out.health_unanswered} time(s)" if out.health_unanswered else ""]
    out.did += "".join(f"; {fact}" for fact in facts if fact)
    out.log = [line for line in lines if " ERROR " in line or " WARNING " in line][-8:]


def _spooled(spool: Path) -> int:
    """Results in spool files, waiting or quarantined: measured and not in the database."""
    files = [*spool.glob("run-*.json"), *spool.glob("quarantine/run-*.json")] if spool.is_dir() else []
    return sum(len(json.loads(p.read_text()).get("results", [])) for p in files)


def _mode(mode: str) -> Callable[[Harness], None]:
    def set_mode(world: Harness) -> None:
        world.proxy.mode = mode
    return set_mode


def _kill_database(world: Harness) -> None:
    world.wait_for("SELECT id FROM run WHERE status = 'running'", 60)  # mid-run, not between runs
    world.pg.kill()


def _kill_monitor(world: Harness) -> None:
    world.wait_for("SELECT id FROM run WHERE status = 'running'", 60)
    world.forget(world.procs[-1])
    world.procs[-1].send_signal(signal.SIGKILL)
    world.procs[-1].wait()


def _restart_monitor(world: Harness) -> None:
    world.serve()


def _nothing(world: Harness) -> None:
    """Two replicas racing each slot are the fault themselves."""


def _slow_clients(world: Harness) -> None:
    """SLOW_CLIENTS connections to the monitor's port, each head a byte every 2 s, held until healed."""
    world.held.append(SlowClients(world.ports[-1], SLOW_CLIENTS, every_s=2.0).__enter__())


def _let_go(world: Harness) -> None:
    for held in world.held:
        held.__exit__()
    world.held.clear()


def _stop_while_headers_trickle(world: Harness) -> None:
    """SIGTERM while the server trickles its headers: the monitor must stop within the grace period
    though every call in flight is waiting on a server; a new one takes over once it is healthy."""
    world.wait_for("SELECT id FROM run WHERE status = 'running'", 60)
    time.sleep(2.0)  # calls in flight, each waiting on a trickled head
    world.forget(world.procs[-1])
    began = time.monotonic()
    world.procs[-1].send_signal(signal.SIGTERM)
    world.stops_s.append(stopped_within(world.procs[-1], began, 2 * GRACE_S))
    world.proxy.mode = "ok"
    world.serve()


ENDPOINT = ("the run's items are stored as errors (never as wrong answers); no FAIL, no rollback; "
            "the next cycle after healing measures and judges")
FAULTS = [
    Fault("endpoint_down", f"connections refused: {ENDPOINT}", _mode("down"), _mode("ok")),
    Fault("server_errors", f"503 on every request: {ENDPOINT}", _mode("server_errors"), _mode("ok")),
    Fault("timeouts", f"answers that never come, cut at the 3 s deadline: {ENDPOINT}", _mode("hang"),
          _mode("ok")),
    Fault("byte_a_second", f"a trickle cut at the total deadline: {ENDPOINT}", _mode("trickle"), _mode("ok")),
    Fault("huge_body", f"40 MB answers abandoned past the cap (batch_size x 1 MiB): {ENDPOINT}",
          _mode("huge_body"), _mode("ok")),
    Fault("garbage_json", f"HTML where JSON belongs: {ENDPOINT}", _mode("garbage_json"), _mode("ok")),
    Fault("database_killed", "PostgreSQL killed mid-run and restarted: what was measured is spooled and "
          "replayed once; the monitor keeps running", _kill_database, lambda w: w.pg.start()),
    Fault("database_killed_spool_unwritable", "the database killed while the spool folder cannot be "
          "written: results kept in memory and replayed when it is back", _kill_database,
          lambda w: w.pg.start(), spool_broken=True),
    Fault("monitor_kill_9", "kill -9 of serve mid-run: a new monitor marks the run interrupted and goes on",
          _kill_monitor, _restart_monitor),
    Fault("two_replicas", "two replicas on one database: each slot worked once, each action taken once",
          _nothing, _nothing, replicas=2),
    Fault("slow_clients", f"{SLOW_CLIENTS} connections sending their request heads a byte every 2 s: "
          "/healthz answered throughout, probing goes on", _slow_clients, _let_go),
    Fault("slow_headers", "a server that sends its headers a byte a second, cut at the 3 s total "
          f"deadline: {ENDPOINT}; SIGTERM mid-fault stops serve within the grace period",
          _mode("slow_headers"), _stop_while_headers_trickle),
    Fault("nul_answers", "answers holding a NUL and a lone surrogate: stored (escaped) and judged like any "
          "other answer, nothing spooled or lost", _mode("nul_text"), _mode("ok")),
    Fault("malformed_shapes", f"JSON of the wrong shape (a string message, a string choice, a number "
          f"for content): an invalid response on each item, never an interrupted run: {ENDPOINT}",
          _mode("wrong_shape"), _mode("ok")),
    Fault("concurrent_replay", "PostgreSQL killed mid-run under two replicas sharing one spool: both replay "
          "at once when it is back, and each result is stored once", _kill_database,
          lambda w: w.pg.start(), replicas=2),
]


@dataclass(frozen=True)
class CheckedFault:
    """A fault the live matrix cannot stage here, run as the tests that stage it: llama.cpp's echo
    fails the consistency check even when healthy (so log-probability faults need a scripted
    server), and a move or an action race needs a failing version, which two copies of one model
    never give."""

    name: str
    must: str
    tests: tuple[str, ...]


TESTED = [
    CheckedFault("shifted_logprobs", "log-probabilities shifted by one token: an invalid response, never a "
                 "score", ("tests/test_endpoint.py::test_unfaithful_echo_is_caught",)),
    CheckedFault("nonfinite_logprobs", "NaN or positive log-probabilities: an invalid response, never a "
                 "score", ("tests/test_endpoint.py::test_unfaithful_echo_is_caught",)),
    CheckedFault("database_gone_during_a_move", "PostgreSQL refuses connections while the deployer moves "
                "serving: the action is left `deploying`, then settled by asking the deployer",
                ("tests/test_orphans.py",)),
    CheckedFault("replicas_racing_one_action", "two replicas act on the same FAIL: one action per step",
                ("tests/test_actions.py::test_a_verdict_is_acted_on_once_across_replicas",
                 "tests/test_actions.py::test_a_failure_is_acted_on_once_not_once_per_cycle")),
]


def run_tested(fault: CheckedFault, root: Path) -> Outcome:
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *fault.tests],
                          cwd=root, capture_output=True, text=True, timeout=900)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    out = Outcome(fault.name, fault.must, did=f"by its tests ({', '.join(fault.tests)}): {summary}",
                  survived=done.returncode == 0, recover_s=None)
    out.log = [f"{time.monotonic() - began:.0f} s"]
    return out


@contextmanager
def world() -> Iterator[tuple[TempPostgres, FaultProxy, Path]]:
    """The cluster, llama.cpp serving SmolLM2 behind the proxy, and the tokenizer folder."""
    import tempfile

    from monitor.probing.weights import prepare_smollm2, smollm2_gguf
    from monitor.testing.postgres import temp_postgres
    from monitor.testing.servers import llama_cpp_server

    tokenizer = prepare_smollm2()
    with tempfile.TemporaryDirectory(prefix="fmn-chaos-") as tmp, temp_postgres() as pg, \
            llama_cpp_server(smollm2_gguf(), Path(tmp)) as served:
        proxy = FaultProxy(served.base_url)
        try:
            yield pg, proxy, tokenizer
        finally:
            proxy.stop()
