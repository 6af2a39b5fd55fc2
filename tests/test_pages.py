"""The monitor's own pages, served by a real server over a store with real data, looked at by a
real headless Chromium (the Debian package `chromium`; `make tools` installs it).

v2 of `bot` FAILs arithmetic with alignment loss; one of its answers is HTML, and one item's id is
full of quotes and markup: both must reach the browser as text. Screenshots are saved in the
test's folder and, when FORGETMENOT_SCREENSHOTS names a folder, copied there (the docs' images:
`FORGETMENOT_SCREENSHOTS=docs/images pytest tests/test_pages.py`).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from monitor.errors import IMAGE_FLAVOR_ENV, MissingExtra
from monitor.policy.loading import load_config
from monitor.policy.suites import load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.service.access import load_access
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import Monitor, open_monitor
from monitor.store import Store, Verdict
from tests.conftest import PROBES
from tests.test_judge import _answers, _gold
from tests.test_security import PASSWORD, basic, web_config

CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium is not installed "
                                    "(/usr/bin/chromium, Debian's `chromium`; `make tools` installs it)")
INJECTED = '<script>alert(1)</script><img src=x onerror="alert(2)">'
ODD_ID = "ar-001 \"quoted\" & 'single' <b>bold</b>"
POLICY = """\
database: sqlite:///fmn.db
schedule: {every: 1h, jitter: 0s}
models:
  bot:
    backend: {kind: transformers, device: cpu}
    versions: {v1: {path: w}, v2: {path: w, description: "fine-tuned on \\"JSON\\" <verdicts>"}}
    baseline: v1
    live: v2
  helper:
    backend: {kind: transformers, device: cpu}
    versions: {v1: {path: w}, v2: {path: w}}
    baseline: v1
    live: v2
suites: [probes/arithmetic, probes/fluency]
policy:
  defaults: {min_items: 5}
  guards: {approval: manual}
"""


@dataclass
class Fleet:
    folder: Path
    monitor: Monitor
    verdict: Verdict  # bot v2 arithmetic: FAIL, alignment loss
    base: str  # the running server's URL


def _suites(folder: Path) -> None:
    for name in ("arithmetic", "fluency"):
        shutil.copytree(PROBES / name, folder / "probes" / name)
    items = folder / "probes" / "arithmetic" / "items.jsonl"
    first, *rest = items.read_text().splitlines()
    items.write_text("\n".join([json.dumps({**json.loads(first), "id": ODD_ID}), *rest]) + "\n")
    (folder / "w").mkdir()
    (folder / "forgetmenot.yaml").write_text(POLICY)


def _backends(folder: Path) -> Any:
    """v1 (and all of `helper`) answers right; bot's v2 still ranks the right choice first but
    answers wrongly, once in HTML."""
    suite = load_suite(folder / "probes" / "arithmetic")
    spec = suite.spec.kinds.generate_until
    assert spec is not None

    def load(config: Any, model: str, version: str) -> FakeBackend:
        right = version == "v1" or model == "helper"
        answers = _answers(suite, right)
        if not right:
            answers[spec.doc_to_text.format_map(suite.items[0].fields())] = INJECTED
        return FakeBackend(answers=answers, preferred=_gold(suite))

    return load


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    folder = tmp_path_factory.mktemp("fleet")
    _suites(folder)
    monitor = open_monitor(folder / "forgetmenot.yaml", load_backend=_backends(folder))
    for slot in (1, 2, 3):
        for model in ("bot", "helper"):
            monitor.cycle(model, "v1", slot=slot)
            monitor.cycle(model, "v2", slot=slot)
    verdict = monitor.store.verdicts(model="bot", capability="arithmetic")[-1]
    assert (verdict.phase, verdict.diagnosis) == ("FAIL", "alignment_loss")
    server = HttpServer(Api(monitor.config, monitor.store, reports=folder / "reports"), port=0).start()
    try:
        yield Fleet(folder, monitor, verdict, f"http://127.0.0.1:{server.port}")
    finally:
        server.stop()
        monitor.store.close()


def fetch(url: str, header: str | None = None) -> tuple[int, Message, str]:
    request = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.headers, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def chromium(profile: Path, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}"]
    done = subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Dom(HTMLParser):
    """The elements and the text of a document, as the browser left it."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.chunks: list[str] = []
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.chunks).split())

    def cells(self) -> list[str]:
        return [c.strip() for c in self.chunks if c.strip()]


def rendered(fleet: Fleet, path: str, tmp_path: Path) -> Dom:
    return Dom(chromium(tmp_path / "profile", "--dump-dom", fleet.base + path))


def screenshot(fleet: Fleet, path: str, name: str, tmp_path: Path) -> Path:
    out = tmp_path / f"{name}.png"
    chromium(tmp_path / "profile", f"--screenshot={out}", "--window-size=1280,900", fleet.base + path)
    assert out.stat().st_size > 10_000, "the screenshot is (nearly) empty"
    wanted = os.environ.get("FORGETMENOT_SCREENSHOTS")
    if wanted:
        Path(wanted).mkdir(parents=True, exist_ok=True)
        shutil.copy(out, Path(wanted) / out.name)
    return out


# -- in a real browser --------------------------------------------------------------------------


@needs_chromium
def test_the_fleet_board_shows_each_cell_as_a_word_and_a_colour(fleet: Fleet, tmp_path: Path) -> None:
    dom = rendered(fleet, "/", tmp_path)
    badges = [(attrs.get("class"), tag) for tag, attrs in dom.tags if "phase" in (attrs.get("class") or "")]
    assert ("phase fail", "span") in badges and ("phase pass", "span") in badges
    assert "FAIL" in dom.cells() and "PASS" in dom.cells()
    assert "alignment loss" in dom.text and "pending approval" in dom.text
    links = {attrs.get("href") for tag, attrs in dom.tags if tag == "a"}
    assert {f"/verdicts/{fleet.verdict.id}", "/models/bot", "/models/helper"} <= links
    assert screenshot(fleet, "/", "fleet-board", tmp_path).is_file()


@needs_chromium
def test_the_verdict_page_shows_the_drop_the_diagnosis_the_items_and_the_command(
        fleet: Fleet, tmp_path: Path) -> None:
    dom = rendered(fleet, f"/verdicts/{fleet.verdict.id}", tmp_path)
    text = dom.text
    assert "bot · arithmetic" in text and "v2 vs v1" in text
    assert "alignment loss" in text and "knowledge score" in text and "alignment gap" in text
    assert "+100.0 pts [" in text and "5 pts" in text, "the drop with its bounds against the tolerance"
    assert "forgetmenot rollback" not in text, "alignment loss is retrained, never rolled back"
    pending = next(a for a in fleet.monitor.store.actions("bot") if a.status == "pending_approval")
    assert f"forgetmenot approve {pending.id}" in text
    assert "generate until: 78 item(s) regressed; the worst 50 shown, 28 more" in text
    assert INJECTED in dom.cells() and ODD_ID in dom.cells(), "model output and item id shown as text"
    assert [t for t, _ in dom.tags if t in ("script", "img", "b")] == [], "nothing injected into the DOM"
    assert sum(t == "svg" for t, _ in dom.tags) == 2, "one drop-vs-tolerance chart per kind"
    assert screenshot(fleet, f"/verdicts/{fleet.verdict.id}", "verdict-page", tmp_path).is_file()


@needs_chromium
def test_the_model_page_draws_the_score_history(fleet: Fleet, tmp_path: Path) -> None:
    dom = rendered(fleet, "/models/bot", tmp_path)
    lines = [attrs for tag, attrs in dom.tags if tag == "polyline"]
    assert len(lines) == 3 * 2, "arithmetic (two kinds) and fluency, one line per version"
    assert 'fine-tuned on "JSON" <verdicts>' in dom.cells(), "a description from the policy, as text"
    assert "verdicts" not in [t for t, _ in dom.tags]
    assert "v2 (live)" in dom.text and "v1 (baseline)" in dom.text
    assert {f"/verdicts/{fleet.verdict.id}"} <= {attrs.get("href") for tag, attrs in dom.tags if tag == "a"}
    assert screenshot(fleet, "/models/bot", "model-page", tmp_path).is_file()


# -- over HTTP ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), [
    ("/verdicts/999999", 404), ("/models/nobody", 404), ("/models/a%2F..%2Fb", 404),
    ("/verdicts/abc", 400), ("/verdicts/-1", 400), ("/verdicts/2147483648", 400),
    ("/verdicts/99999999999999999999", 400), ("/verdicts/1/report/x", 400), ("/?colour=red", 400),
    ("/api/v1/verdicts/999999", 404), ("/api/v1/verdicts/abc", 400), ("/api/v1/verdicts/2147483648", 400)])
def test_unknown_ids_are_404_and_bad_ones_400(fleet: Fleet, path: str, status: int) -> None:
    got, headers, body = fetch(fleet.base + path)
    assert got == status
    if path.startswith("/api/"):
        assert headers["Content-Type"] == "application/json" and json.loads(body)["error"]
    else:
        assert headers["Content-Type"] == "text/html; charset=utf-8" and f"<h1>{status}</h1>" in body


def test_pages_forbid_scripts_and_are_escaped_in_the_source(fleet: Fleet) -> None:
    status, headers, body = fetch(f"{fleet.base}/verdicts/{fleet.verdict.id}")
    assert status == 200 and "script-src" not in headers["Content-Security-Policy"]
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" not in body and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "&quot;quoted&quot; &amp; &#x27;single&#x27; &lt;b&gt;" in body


def test_the_alert_rules_link_lands_on_the_newest_verdict_page(fleet: Fleet) -> None:
    """The breach alert's monitor_url, filled in as Alertmanager fills it, redirects to the page
    of the verdict that made it fire."""
    from monitor.metrics.rules import VERDICT_PAGE

    labels = {"model": "bot", "version": "v2", "capability": "arithmetic"}
    link = VERDICT_PAGE
    for key, value in labels.items():
        link = link.replace(f"{{{{ $labels.{key} }}}}", value)
    request = urllib.request.Request(fleet.base + link)
    opener = urllib.request.build_opener(_NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as moved:
        opener.open(request, timeout=30)
    assert moved.value.code == 302
    assert moved.value.headers["Location"] == f"/verdicts/{fleet.verdict.id}"
    status, _, body = fetch(fleet.base + link)  # followed, as a browser does
    assert status == 200 and "alignment loss" in body.lower()
    missing, _, _ = fetch(fleet.base + "/verdicts/latest?model=bot&version=v9&capability=arithmetic")
    incomplete, _, said = fetch(fleet.base + "/verdicts/latest?model=bot")
    assert missing == 404 and incomplete == 400 and "version, capability" in said


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any) -> None:
        return None


def test_one_verdict_as_json_is_what_the_list_gives(fleet: Fleet) -> None:
    status, _, body = fetch(f"{fleet.base}/api/v1/verdicts/{fleet.verdict.id}")
    _, _, listed = fetch(f"{fleet.base}/api/v1/verdicts?model=bot&capability=arithmetic&limit=1")
    assert status == 200 and json.loads(body) == json.loads(listed)[0]
    assert {k["kind"] for k in json.loads(body)["kinds"]} == {"multiple_choice", "generate_until"}


def test_the_fleet_board_takes_a_fixed_number_of_queries(fleet: Fleet) -> None:
    """Grouped queries, never one per model or per cell."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = fleet.monitor.store.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        began = time.perf_counter()
        assert fetch(fleet.base + "/")[0] == 200
        took = time.perf_counter() - began
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= 5, statements
    assert took < 0.5


def test_the_evidence_report_is_made_once_and_served_in_a_sandbox(fleet: Fleet) -> None:
    pytest.importorskip("evidently", reason="the report extra (evidently) is not installed")
    url = f"{fleet.base}/verdicts/{fleet.verdict.id}/report"
    status, headers, body = fetch(url)
    assert status == 200 and "current" in body and "reference" in body
    assert headers["Content-Security-Policy"].startswith("sandbox allow-scripts")
    [cached] = (fleet.folder / "reports").glob(f"verdict-{fleet.verdict.id}-*.html")
    made = cached.stat().st_mtime
    assert fetch(url)[0] == 200 and cached.stat().st_mtime == made, "served from the cache"
    assert [p.name for p in (fleet.folder / "reports").iterdir()] == [cached.name], "no work folder left"


@pytest.mark.parametrize("flavor", [None, "model", "slim"], ids=["pip", "model-image", "slim-image"])
def test_a_missing_report_extra_is_explained_where_it_can_be_fixed(
        fleet: Fleet, monkeypatch: pytest.MonkeyPatch, flavor: str | None) -> None:
    """Without the `report` extra, an install outside the image is told what to pip install; in the
    image, whose root is read-only, the page says the image leaves reports out on purpose and which
    build has them, and advises no install."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "evidently" else find_spec(name, *rest))
    if flavor is None:
        monkeypatch.delenv(IMAGE_FLAVOR_ENV, raising=False)
    else:
        monkeypatch.setenv(IMAGE_FLAVOR_ENV, flavor)
    status, _, body = fetch(f"{fleet.base}/verdicts/{fleet.verdict.id}")
    text = html.unescape(body)
    assert status == 200
    assert f"/verdicts/{fleet.verdict.id}/report" not in text, "no link to a report that cannot be made"
    if flavor is None:
        assert "No evidence report: evidently is not installed; install it with: " \
               "pip install 'forgetmenot[report]'" in text
        return
    assert f"No evidence report: the forgetmenot {flavor} image leaves evidence reports out" in text
    assert "out on purpose, to stay small; the regressed items on this page are the evidence." in text
    assert "An image built with --build-arg EXTRAS=report makes them (docs/container.md)." in text
    assert "pip install" not in text
    assert "pip install" not in str(MissingExtra("torch", "model"))
    assert "--build-arg FLAVOR=model" in str(MissingExtra("torch", "model"))


def test_databases_sharing_a_reports_folder_each_get_their_own_report(tmp_path: Path) -> None:
    """Two monitors with one home, or a database made anew whose ids start again, each have a
    verdict 1: each is served its own report, titled with the versions it compares."""
    pytest.importorskip("evidently", reason="the report extra (evidently) is not installed")
    from monitor.judge import judge_suite
    from monitor.probing.run import VersionRef, probe_suite
    from monitor.service.pages import Pages
    from tests.test_actions import policy

    suite = load_suite(PROBES / "arithmetic")
    rules = load_config(policy(tmp_path, "sqlite:///unused.db")).policy.rules_for(suite.capability)
    config = load_config(tmp_path / "forgetmenot.yaml")
    served = {}
    for candidate in ("v2", "v3"):
        store = Store(f"sqlite:///{tmp_path / candidate}.db")
        for version, right in (("v1", True), (candidate, False)):
            backend = FakeBackend(answers=_answers(suite, right), preferred=_gold(suite))
            probe_suite(store, backend, suite, VersionRef("bot", version))
        _, verdict = judge_suite(store, suite, rules, "bot", candidate, "v1")
        assert verdict.id == 1
        served[candidate] = Pages(config, store, tmp_path / "reports").report(1).body.decode()
        store.close()
    assert served["v3"] != served["v2"], "the other database's report"
    assert len(list((tmp_path / "reports").glob("verdict-1-*.html"))) == 2
    assert "bot v2 vs v1" in served["v2"] and "bot v3 vs v1" in served["v3"]


def test_pages_need_the_same_credentials_as_the_api(fleet: Fleet, tmp_path: Path) -> None:
    config = load_config(fleet.folder / "forgetmenot.yaml")
    access = load_access(web_config=web_config(tmp_path))
    store = Store(config.database_url())
    server = HttpServer(Api(config, store, access=access, reports=tmp_path / "reports"), port=0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        verdict = f"/verdicts/{fleet.verdict.id}"
        for path in ("/", "/models/bot", verdict, f"{verdict}/report"):
            status, headers, _ = fetch(base + path)
            assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="forgetmenot"'), path
        assert fetch(base + "/", basic("prometheus", "wrong"))[0] == 401
        assert fetch(base + "/", basic("prometheus", PASSWORD))[0] == 200
        assert fetch(base + "/healthz")[0] == 200
    finally:
        server.stop()
        store.close()
