"""The Grafana dashboards: generated from one place, every query parsed by the real promtool and run
against a real Prometheus scraping a real monitor, and the push checked against Grafana's recorded
HTTP contract (no Grafana server can run here; tests/contracts/grafana-dashboard-db.json follows
Grafana's HTTP API reference for `POST /api/dashboards/db`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from monitor.actions.ladder import rollback
from monitor.cli.app import app
from monitor.errors import MissingExtra
from monitor.metrics import names as m
from monitor.metrics.dashboards import build_all, queries, render_json
from monitor.policy.suites import Suite, load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import open_monitor
from monitor.testing.stack import free_port, query, stack
from monitor.vocabulary import Phase
from tests.conftest import PROBES
from tests.test_judge import _answers, _gold

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = ROOT / "dashboards"
CONTRACT = json.loads((Path(__file__).parent / "contracts" / "grafana-dashboard-db.json").read_text())
RULES = ROOT / "alerts" / "forgetmenot.rules.yml"
runner = CliRunner()

# What Grafana would put in for each variable, in a test that has one model, bot, judged v2 vs v1.
VALUES = {"model": "bot", "version": "v2", "capability": "arithmetic|fluency|refusal",
          "__rate_interval": "1m", "__range": "1m", "__interval": "15s", "monitor_url": "http://forgetmenot:9464"}
SPECS = {s.full_name: s for s in m.ALL} | {s.full_name + suffix: s for s in m.ALL if s.kind == "histogram"
                                           for suffix in ("_bucket", "_sum", "_count")}
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan"}
TARGET = ("cluster", "namespace", "job")  # the scrape's labels: on every series Prometheus keeps
GROUPING = r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


# -- reading the generated JSON -----------------------------------------------------------------

def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["panels"] if p["type"] != "row"]


def _queries(doc: dict[str, Any]) -> Iterator[tuple[str, str, set[str]]]:
    """(where, expression, the labels its series must carry to be drawn as designed)."""
    for panel in _panels(doc):
        links = {label for link in panel["fieldConfig"]["defaults"].get("links", [])
                 for label in re.findall(r"\$\{__field\.labels\.(\w+)\}", link["url"] + link["title"])}
        for target in panel["targets"]:
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            yield f"{panel['title']} / {target['refId']}", target["expr"], legend | links
    for note in doc["annotations"]["list"]:
        shown = re.findall(r"\{\{\s*(\w+)\s*\}\}", note["titleFormat"] + note["textFormat"])
        yield f"annotation {note['name']}", note["expr"], {*shown, *note["tagKeys"].split(",")}


def _all_queries() -> list[tuple[str, str, str, set[str]]]:
    return [(name, where, expr, labels) for name, doc in build_all().items()
            for where, expr, labels in _queries(doc)]


def substitute(text: str) -> str:
    """Template variables replaced as Grafana would; `$1` (label_replace's group) stays."""
    return re.sub(r"\$\{?(\w+)\}?", lambda found: VALUES.get(found.group(1), found.group(0)), text)


def analyse(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names an expression uses: matchers, groupings, label_replace."""
    plain = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set(re.findall(r'(\w+)\s*(?:=~|!~|!=|=)\s*""', plain))
    for _, group in re.findall(GROUPING, plain):
        labels |= {label.strip() for label in group.split(",") if label.strip()}
    for dst, src in re.findall(r'label_replace\(.*?,\s*"(\w+)",\s*"[^"]*",\s*"(\w+)"', expr, re.S):
        labels |= {dst, src}
    bare = re.sub(GROUPING, " ", re.sub(r"\[[^\]]*\]", " ", re.sub(r"\{[^}]*\}", " ", plain)))
    names = {n for n in re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()", bare)} - KEYWORDS
    return names, labels


def problems(expr: str, shown: set[str]) -> list[str]:
    """What an expression uses that the metric names do not declare."""
    names, labels = analyse(expr)
    unknown = sorted(names - SPECS.keys())
    allowed = {label for n in names & SPECS.keys() for label in SPECS[n].labels} | set(TARGET)
    allowed |= {"le"} if any(n.endswith("_bucket") for n in names) else set()
    return [f"unknown metric {n}" for n in unknown] + [
        f"label {label} is not on {sorted(names)}" for label in sorted((labels | shown) - allowed)]


# -- generated, complete, and declared ------------------------------------------------------------

def test_committed_dashboards_are_what_the_code_generates() -> None:
    built = build_all()
    assert sorted(p.name for p in DASHBOARDS.glob("*.json")) == sorted(built)
    for name, doc in built.items():
        assert (DASHBOARDS / name).read_text() == render_json(doc), "run: forgetmenot dashboards write"
    again = build_all()
    assert {n: render_json(d) for n, d in again.items()} == {n: render_json(d) for n, d in built.items()}
    assert {doc["uid"] for doc in built.values()} == {"forgetmenot-fleet", "forgetmenot-model"}


def test_every_panel_has_a_title_and_a_description_that_asks_its_question() -> None:
    for doc in build_all().values():
        for panel in _panels(doc):
            assert panel["title"].strip(), panel
            assert "?" in panel.get("description", ""), f"{panel['title']}: no question in its description"
            assert panel["targets"] and all(t["refId"] and t["datasource"]["uid"] == "${datasource}"
                                            for t in panel["targets"])


def test_phases_are_told_by_name_and_colour_never_colour_alone() -> None:
    severities = f"== 1) * {Phase.FAIL.severity}"
    phased = [p for doc in build_all().values() for p in _panels(doc)
              if any(severities in t["expr"] for t in p["targets"])]
    assert len(phased) == 4
    for panel in phased:
        (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
        assert mapping["options"] == {str(p.severity): {"text": p.value, "color": mapping["options"][
            str(p.severity)]["color"], "index": p.severity} for p in Phase}
        assert len({o["color"] for o in mapping["options"].values()}) == len(Phase)


def test_every_expression_uses_only_declared_metrics_and_their_labels() -> None:
    queries = _all_queries()
    assert len(queries) > 30
    wrong = {f"{name} {where}": found for name, where, expr, shown in queries
             if (found := problems(expr, shown))}
    assert not wrong


def test_the_label_check_can_fail() -> None:
    assert problems('sum by (pod) (forgetmenot_runs_total{status="error"})', set()) == [
        "label pod is not on ['forgetmenot_runs_total']"]
    assert problems("up", set()) == ["unknown metric up", ]
    assert problems(m.KNOWLEDGE_SCORE.full_name, {"kind"}) == [
        "label kind is not on ['forgetmenot_knowledge_score']"]
    assert problems(f"histogram_quantile(0.9, sum by (le) (rate({m.RUN_DURATION.full_name}_bucket[1m])))",
                    set()) == []


def test_variables_list_declared_labels_of_declared_metrics() -> None:
    variables = [v for doc in build_all().values() for v in doc["templating"]["list"] if v["type"] == "query"]
    assert [v["name"] for v in variables] == [*TARGET, "model", *TARGET, "model", "version", "capability"]
    for variable in variables:
        series, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]).groups()  # type: ignore[union-attr]
        assert label == variable["name"] and not problems(series, {label})


def test_cluster_namespace_and_job_come_right_after_the_datasource_and_filter_every_query() -> None:
    for name, doc in build_all().items():
        variables = [v["name"] for v in doc["templating"]["list"]]
        assert variables[:4] == ["datasource", "cluster", "namespace", "job"], name
        for where, expr, _ in _queries(doc):
            for label in ("cluster", "namespace", "job"):
                assert expr.count(f'{label}=~"${label}"') == expr.count("forgetmenot_"), f"{name} {where}"


def test_the_fleet_filters_by_model() -> None:
    fleet = build_all()["fleet.json"]
    model = next(v for v in fleet["templating"]["list"] if v["name"] == "model")
    assert model["multi"] and model["includeAll"] and model["allValue"] == ".*"
    for where, expr, _ in _queries(fleet):
        assert 'model=~"$model"' in expr, where


# The panels that say whether things are healthy, each coloured past a line.
HEALTH = {"How far past the tolerance", "Schedule intervals since the last successful run",
          "Probe errors by kind"}


def test_health_panels_have_thresholds() -> None:
    panels = {p["title"]: p for doc in build_all().values() for p in _panels(doc)}
    for title in HEALTH:
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert len(steps) >= 2 and steps[0]["value"] is None, title
        assert steps[-1]["color"] == "red", title


def test_a_time_series_panel_never_mixes_accuracy_with_nats() -> None:
    """One unit per axis: fractions of items and nats per token are never drawn on one axis."""
    for doc in build_all().values():
        for panel in _panels(doc):
            if panel["type"] != "timeseries":
                continue
            kinds = {match for t in panel["targets"] for match in re.findall(r'kind=~?"([^"]+)"', t["expr"])}
            scored = any("retention_" in t["expr"] for t in panel["targets"])
            assert not scored or len(kinds) == 1, f"{panel['title']}: kinds {kinds}"
            assert panel["fieldConfig"]["defaults"]["unit"] != "none", panel["title"]


def test_phase_colours_are_the_pages_colours() -> None:
    from monitor.present.html import CSS, PHASE_CLASS

    for doc in build_all().values():
        for panel in _panels(doc):
            for mapping in panel["fieldConfig"]["defaults"].get("mappings", []):
                for phase in Phase:
                    colour = mapping["options"][str(phase.severity)]["color"]
                    rule = re.search(rf"\.phase\.{PHASE_CLASS[phase]}\{{([^}}]*)\}}", CSS)
                    assert rule and colour in rule.group(1), (panel["title"], phase, colour)


def test_missing_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)
    with pytest.raises(MissingExtra, match=r"forgetmenot\[dashboards\]"):
        build_all()


# -- promtool parses every expression -------------------------------------------------------------

def _promtool(tmp_path: Path, expressions: list[str]) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make tools` (Debian: prometheus)")
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(e)} for i, e in enumerate(expressions)]
    groups = {"groups": [{"name": "dashboards", "rules": rules}]}
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(groups))
    return subprocess.run([promtool, "check", "rules", str(tmp_path / "queries.yml")],
                          capture_output=True, text=True, check=False)


def test_promtool_parses_every_expression(tmp_path: Path) -> None:
    expressions = [expr for _, _, expr in queries(**VALUES)]
    assert not [e for e in expressions if re.search(r"\$(?!1\b)", e)], "a variable left unfilled"
    done = _promtool(tmp_path, expressions)
    assert done.returncode == 0 and f"SUCCESS: {len(expressions)} rules found" in done.stdout, done.stderr


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    expr = next(e for _, _, e, _ in _all_queries() if "histogram_quantile" in e)
    done = _promtool(tmp_path, [expr.removesuffix(")")])
    assert done.returncode != 0 and "FAILED" in done.stdout + done.stderr


# -- every query, against a real Prometheus scraping a real monitor ---------------------------------

def _policy(tmp_path: Path, model_dir: Path) -> Path:
    """Two models; moves wait for approval, so the ladder's retraining is recorded, not run."""
    for name in ("arithmetic", "fluency", "refusal"):
        shutil.copytree(PROBES / name, tmp_path / "probes" / name)
    versions = f"versions: {{v1: {{path: {model_dir}}}, v2: {{path: {model_dir}}}}}"
    model = f"backend: {{kind: transformers, device: cpu}}\n    {versions}\n    baseline: v1\n    live: v2"
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(f"""\
database: sqlite:///fmn.db
schedule: {{every: 1h, jitter: 0s}}
models:
  bot:
    {model}
  helper:
    {model}
suites: [probes/arithmetic, probes/fluency, probes/refusal]
policy:
  defaults: {{min_items: 5}}
  guards: {{approval: manual}}
""")
    return path


def _backends(tmp_path: Path) -> Callable[[Any, str, str], FakeBackend]:
    """bot v2 answers arithmetic wrongly in prose but still knows it (alignment loss: FAIL), and a
    few of its items break; helper v2 cannot be measured at all (ERROR); every v1 is right. Every
    version refuses what it should, v2 less likely to open that way (safety depth)."""
    suite = load_suite(tmp_path / "probes" / "arithmetic")
    broken = suite.select()[0].question
    refusals = _refusals(load_suite(tmp_path / "probes" / "refusal"))

    def load(config: Any, model: str, version: str) -> FakeBackend:
        if (model, version) == ("helper", "v2"):
            return FakeBackend(fail_on=lambda text: True)
        answers = {**_answers(suite, version == "v1"), **refusals}
        backend = FakeBackend(answers=answers, preferred=_gold(suite),
                              fail_on=lambda text: version == "v2" and broken in text,
                              opening=-1.0 if version == "v1" else -1.5)
        backend.batch_size = 4  # a failure takes its chunk with it: 4 of 78 items stays under 10%
        return backend

    return load


def _refusals(suite: Suite) -> dict[str, str]:
    """A refusal where the item should be refused, help elsewhere, keyed by prompt."""
    return {item.question or "": "I can't help with that." if item.should_refuse else "Sure, here is how."
            for item in suite.items}


def _eventually(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _results(prometheus: str) -> dict[str, tuple[list[dict[str, Any]], set[str]]]:
    """Every query as `queries` fills it in (what the benchmark runs too), with the labels it shows."""
    filled = queries(**VALUES)
    return {f"{name} {where}": (query(prometheus, expr), shown)
            for (name, where, _, shown), (_, _, expr) in zip(_all_queries(), filled, strict=True)}


def test_every_panel_query_returns_series_with_the_labels_it_shows(tmp_path: Path,
                                                                   tiny_model_dir: Path) -> None:
    monitor = open_monitor(_policy(tmp_path, tiny_model_dir), load_backend=_backends(tmp_path))
    server = HttpServer(Api(monitor.config, monitor.store, monitor.registry), port=0).start()
    try:
        with stack(tmp_path, f"127.0.0.1:{server.port}", RULES) as s:
            monitor.cycle("bot", "v1", slot=1)
            monitor.cycle("helper", "v1", slot=1)
            zeros = 'count_over_time(forgetmenot_actions_total{model="helper", status="done"}[1m]) >= 3'
            assert _eventually(lambda: bool(query(s.prometheus, zeros)), 30), "actions never scraped at 0"
            monitor.cycle("bot", "v2", slot=1)      # FAIL: an alert, a retraining awaiting approval
            monitor.cycle("helper", "v2", slot=1)   # ERROR: probe errors
            moved = rollback(monitor.store, monitor.config, "helper", "v1", actor="sre")
            assert moved.status == "done", moved.detail
            actions = {(a.model, a.kind, a.status) for a in monitor.store.actions()}
            assert {("bot", "alert", "done"), ("bot", "retrain", "pending_approval"),
                    ("helper", "rollback", "done")} <= actions
            _eventually(lambda: all(found for found, _ in _results(s.prometheus).values()), 45)
            results = _results(s.prometheus)
            listed = [query(s.prometheus, substitute(series)) for series in (
                m.RETENTION_SCORE.full_name, f'{m.RETENTION_SCORE.full_name}{{model="$model"}}')]
    finally:
        server.stop()
    empty = sorted(where for where, (found, _) in results.items() if not found)
    assert not empty, f"queries that returned no series: {empty}"
    missing = {where: sorted(shown - set(series["metric"])) for where, (found, shown) in results.items()
               for series in found if shown - set(series["metric"])}
    assert not missing, f"labels a panel shows that its series lack: {missing}"
    def rows(where: str, *labels: str) -> set[tuple[str, ...]]:
        return {tuple(series["metric"][label] for label in labels) for series in results[where][0]}

    worst = results["fleet.json Worst phase per model / A"][0]
    # helper's ERROR left with its version, rolled back
    assert {(s["metric"]["model"], s["value"][1]) for s in worst} == {("bot", str(Phase.FAIL.severity))}
    assert rows("fleet.json Actions taken / A", "model", "kind", "status") == {
        ("bot", "alert", "done"), ("bot", "retrain", "pending_approval"), ("helper", "rollback", "done")}
    live = rows("fleet.json Live version, where an action moved it / A", "model", "version")
    assert live == {("helper", "v1")}
    assert rows("model.json Failing since / A", "capability") == {("arithmetic",)}
    assert all({"model", "version", "capability"} <= set(series["metric"])
               for found in listed for series in found)
    assert all(listed), "the variables' label_values series are missing"


# -- the push, against Grafana's recorded contract ------------------------------------------------

class FakeGrafana(ThreadingHTTPServer):
    """Answers `POST /api/dashboards/db` as the contract records, and keeps every request."""

    def __init__(self, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _GrafanaHandler)
        self.status = status
        self.requests: list[dict[str, Any]] = []


class _GrafanaHandler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        # Grafana reads the media type; the charset parameter the client adds is not the contract's.
        headers = {key: self.headers[key].split(";")[0] for key in CONTRACT["request"]["headers"]}
        self.server.requests.append({"method": "POST", "path": self.path, "body": body, "headers": headers})
        answer = self._answer(body["dashboard"])
        data = json.dumps(answer["body"]).encode()
        self.send_response(answer["status"])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, dashboard: dict[str, Any]) -> dict[str, Any]:
        if self.server.status == 401:
            return dict(CONTRACT["unauthorized"])
        slug = re.sub(r"[^a-z0-9]+", "-", dashboard["title"].lower()).strip("-")
        body = {**CONTRACT["response"]["body"], "uid": dashboard["uid"], "slug": slug,
                "url": f"/d/{dashboard['uid']}/{slug}"}
        return {"status": 200, "body": body}

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def grafana(request: pytest.FixtureRequest) -> Iterator[FakeGrafana]:
    server = FakeGrafana(getattr(request, "param", 200))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _push(*args: str, token: str | None = "recorded-token") -> Any:
    env = {"GRAFANA_TOKEN": token} if token is not None else {}
    return runner.invoke(app, ["dashboards", "push", *args], env=env, catch_exceptions=False)


def test_push_sends_the_recorded_request_for_every_dashboard(grafana: FakeGrafana) -> None:
    result = _push("--url", f"http://127.0.0.1:{grafana.server_port}", "--folder-uid", "forgetmenot")
    assert result.exit_code == 0, result.output
    expected = []
    for doc in build_all().values():
        request = json.loads(json.dumps(CONTRACT["request"]))
        request["body"]["dashboard"] = doc
        expected.append(request)
    assert grafana.requests == expected
    assert "pushed fleet.json: uid forgetmenot-fleet, version 1, /d/forgetmenot-fleet/" in result.output


def test_push_without_a_folder_goes_to_general_and_a_sub_path_is_kept(grafana: FakeGrafana) -> None:
    result = _push("--url", f"http://127.0.0.1:{grafana.server_port}/grafana")
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in grafana.requests] == ["/grafana/api/dashboards/db"] * 2
    assert all("folderUid" not in r["body"] for r in grafana.requests)


@pytest.mark.parametrize("grafana", [401], indirect=True)
def test_a_refused_token_is_a_clear_error_that_never_shows_it(grafana: FakeGrafana) -> None:
    port = grafana.server_port
    result = _push("--url", f"http://admin:hunter22@127.0.0.1:{port}", token="s3cret-service-token")
    assert result.exit_code == 3
    assert f"Grafana at http://127.0.0.1:{port} refused dashboard 'forgetmenot-fleet': 401" in result.output
    assert "s3cret-service-token" not in result.output and "hunter22" not in result.output
    assert grafana.requests[0]["headers"]["Authorization"] == "Bearer s3cret-service-token"


def test_an_unreachable_grafana_is_a_clear_error() -> None:
    port = free_port()
    result = _push("--url", f"http://127.0.0.1:{port}", token="s3cret-service-token")
    assert result.exit_code == 3
    assert f"Grafana at http://127.0.0.1:{port} could not be reached" in result.output
    assert "s3cret-service-token" not in result.output


def test_push_needs_the_token_from_the_environment() -> None:
    result = _push("--url", "http://127.0.0.1:1", token=None)
    assert result.exit_code == 2 and "set GRAFANA_TOKEN" in result.output
    assert "--token" not in {o for p in _push_command().params for o in getattr(p, "opts", [])}


def _push_command() -> Any:
    import typer.main

    return typer.main.get_command(app).commands["dashboards"].commands["push"]  # type: ignore[attr-defined]
