"""The monitor's own read-only pages, for the on-call engineer who clicks an alert.

    /                        the fleet board: models x capabilities, the newest verdict in each cell
    /models/{model}          score history, versions, verdicts, actions
    /verdicts/{id}           what every alert links to: the drop, the diagnosis, the items, the command
    /verdicts/{id}/report    the evidently report, made on first request into a bounded cache
    /verdicts/latest?model=&version=&capability=
                             a redirect to the newest such verdict: where the Prometheus alerts
                             link, since a verdict id is no metric label

`monitor.service.http` routes these paths here after the same credential check as the API.
This module gathers each page's data (grouped queries, bounded in SQL: no query per model or per
cell) and hands it to the templates in `monitor.present`, which escape everything.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from monitor.errors import MissingExtra, image_flavor
from monitor.metrics.rules import RUNBOOK_BASE
from monitor.policy.bounds import name_problem
from monitor.policy.schema import Config, VersionSpec
from monitor.policy.suites import Suite
from monitor.present.evidence import report_name
from monitor.present.explain import regressions
from monitor.present.facts import Summaries
from monitor.present.fleet_page import Board, ModelRow, fleet_page
from monitor.present.html import error_page
from monitor.present.item_text import item_texts
from monitor.present.model_page import ModelView, VersionRow, model_page
from monitor.present.verdict_page import Regressed, VerdictView, verdict_page
from monitor.service.replies import PAGE_HEADERS, BadRequest, Reply, html_reply, parse_id
from monitor.store import Store, Verdict, utcnow
from monitor.store.versions import with_made
from monitor.vocabulary import Kind

LISTED = 50  # verdicts and actions on a model page, regressed items per kind on a verdict page
BOARD_ACTIONS = 3  # actions per model on the fleet board
HISTORY_RUNS = 60  # runs per version and suite in a model's charts
REPORTS_KEPT = 50  # evidence reports in the cache; the oldest go first
MAX_REPORT_BYTES = 64 * 2**20
REPORT_HEADERS = (  # evidently's report runs its own script: in a sandbox, with an origin of its own
    ("Content-Security-Policy", "sandbox allow-scripts; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))


class Pages:
    def __init__(self, config: Config, store: Store, reports: Path,
                 clock: Callable[[], datetime] = utcnow, suites: Callable[[], Sequence[Suite]] = tuple,
                 runbook_base: str = RUNBOOK_BASE) -> None:
        """`suites` are the monitor's, asked for when a page needs an item's prompt or a suite's
        size; `runbook_base` is where the runbooks are, as `forgetmenot alerts --runbook-base`."""
        self.config = config
        self.store = store
        self.reports = reports
        self.clock = clock
        self.suites = suites
        self.runbook_base = runbook_base
        self._making = threading.Lock()  # one report made at a time: evidently is heavy

    @staticmethod
    def handles(path: str) -> bool:
        return path == "/" or path.startswith(("/models/", "/verdicts/"))

    def get(self, path: str, query: dict[str, str] | None = None) -> Reply:
        if path == "/":
            return self.board()
        if path.startswith("/models/"):
            return self.model(path.removeprefix("/models/"))
        if path == "/verdicts/latest":
            return self.latest(query or {})
        rest = path.removeprefix("/verdicts/")
        if rest.endswith("/report"):
            return self.report(parse_id(rest.removesuffix("/report"), "verdict"))
        return self.verdict(parse_id(rest, "verdict"))

    def error(self, status: int, message: str) -> Reply:
        return html_reply(status, error_page(status, message, self.clock()))

    def board(self) -> Reply:
        config = with_made(self.config, self.store)
        live, runs = self.store.live_pointers(), self.store.last_runs()
        actions = self.store.recent_actions(BOARD_ACTIONS)
        shown = _cells(self.store.newest_verdicts(), live, config)
        rows = [ModelRow(name, live.get(name, spec.live), spec.baseline, shown.get(name, {}), runs.get(name),
                         actions.get(name, [])) for name, spec in config.models.items()]
        capabilities = sorted({cap for cells in shown.values() for cap in cells})
        return html_reply(200, fleet_page(Board(capabilities, rows), self.clock()))

    def model(self, name: str) -> Reply:
        config = with_made(self.config, self.store)
        spec = config.models.get(name) if name_problem(name) is None else None
        if spec is None:
            return self.error(404, f"no model '{name[:64]}' in the policy")
        live = self.store.live_version(config, name)
        versions = [VersionRow(version, _where(v), v.description, version == live, version == spec.baseline)
                    for version, v in spec.versions.items()]
        view = ModelView(name, live, spec.baseline, spec.backend.kind, versions,
                         self.store.score_history(name, HISTORY_RUNS),
                         list(reversed(self.store.verdicts(model=name, newest=LISTED))),
                         list(reversed(self.store.actions(name, newest=LISTED))), LISTED)
        return html_reply(200, model_page(view, self.clock()))

    def verdict(self, verdict_id: int) -> Reply:
        found = self.store.get_verdict(verdict_id)
        if found is None:
            return self.error(404, f"verdict {verdict_id} does not exist")
        verdict, kinds = found
        summaries = Summaries(self.store, self.config, self.suites, self.runbook_base)
        suite = summaries.suite(verdict.suite)
        regressed = [self._regressed(verdict, k.kind, suite) for k in kinds]
        ladder = list(reversed(summaries.ladder(verdict)))
        view = VerdictView(verdict, kinds, summaries.live(verdict.model), regressed,
                           summaries.of(verdict, kinds), ladder, report_missing=_report_missing())
        return html_reply(200, verdict_page(view, self.clock()))

    def latest(self, query: dict[str, str]) -> Reply:
        """The newest verdict of a model's version on a capability, as a redirect to its page."""
        missing = [key for key in ("model", "version", "capability") if not query.get(key)]
        if missing:
            raise BadRequest(f"/verdicts/latest needs {', '.join(missing)}")
        found = self.store.verdicts(model=query["model"], candidate=query["version"],
                                    capability=query["capability"], newest=1)
        if not found:
            named = f"{query['model'][:64]} {query['version'][:64]} on {query['capability'][:64]}"
            return self.error(404, f"no verdict yet for {named}")
        return Reply(302, b"", "text/plain", (("Location", f"/verdicts/{found[-1].id}"), *PAGE_HEADERS))

    def report(self, verdict_id: int) -> Reply:
        found = self.store.get_verdict(verdict_id)
        if found is None:
            return self.error(404, f"verdict {verdict_id} does not exist")
        path = self.reports / report_name(self.store.url, found[0])  # several monitors may share a home
        if not path.is_file():
            missing = _report_missing()
            if missing is not None:
                return self.error(404, missing)
            self._make_report(verdict_id, path)
        if path.stat().st_size > MAX_REPORT_BYTES:
            raise BadRequest(f"the report of verdict {verdict_id} is too large to serve")
        return Reply(200, path.read_bytes(), "text/html; charset=utf-8", REPORT_HEADERS)

    def _regressed(self, verdict: Verdict, kind: str, suite: Suite | None) -> Regressed:
        pairs = regressions(self.store, verdict, kind)
        if kind == Kind.LOGLIKELIHOOD_ROLLING:  # every pair comes back, worst first: keep the worse
            pairs = [(b, c) for b, c in pairs if (c.score or 0.0) < (b.score or 0.0)]
        same = suite is not None and suite.content_hash == verdict.content_hash
        texts = item_texts(suite, kind) if same and suite is not None else {}
        return Regressed(kind, pairs[:LISTED], len(pairs), texts)

    def _make_report(self, verdict_id: int, path: Path) -> None:
        """Made in a folder of its own, then moved into place whole; the cache keeps the newest
        `REPORTS_KEPT`."""
        from monitor.present.evidence import write_report

        with self._making:
            if path.is_file():
                return  # another request made it meanwhile
            self.reports.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=".making-", dir=self.reports))
            try:
                write_report(self.store, verdict_id, work).replace(path)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            kept = sorted(self.reports.glob("verdict-*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in kept[REPORTS_KEPT:]:
                old.unlink(missing_ok=True)


def _cells(verdicts: list[Verdict], live: dict[str, str], config: Config) -> dict[str, dict[str, Verdict]]:
    """Per model and capability, the verdict a cell shows: the live version's newest if it has
    one, else the newest of any candidate. `verdicts` come oldest first."""
    cells: dict[str, dict[str, Verdict]] = {}
    for verdict in verdicts:
        spec = config.models.get(verdict.model)
        current = live.get(verdict.model, spec.live if spec else "")
        shown = cells.setdefault(verdict.model, {})
        held = shown.get(verdict.capability)
        if held is None or verdict.candidate == current or held.candidate != current:
            shown[verdict.capability] = verdict
    return cells


def _where(spec: VersionSpec) -> str:
    parts = [spec.served_name or spec.path or spec.image or "",
             f"gguf {spec.gguf_file}" if spec.gguf_file else "",
             f"adapter {spec.adapter}" if spec.adapter else ""]
    return ", ".join(p for p in parts if p) or "—"


def _report_missing() -> str | None:
    """Why no evidence report can be made here (evidently and pandas are the `report` extra). The
    container images leave that extra out on purpose (it would add about 600 MB: evidently, pandas,
    pyarrow, plotly, statsmodels, scikit-learn; docs/container.md), so there the page says so
    instead of advising an install into a read-only image."""
    missing = [module for module in ("evidently", "pandas") if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    flavor = image_flavor()
    if flavor is None:
        return f"No evidence report: {MissingExtra(missing[0], 'report')}"
    return (f"No evidence report: the forgetmenot {flavor} image leaves evidence reports out on purpose, to "
            "stay small; the regressed items on this page are the evidence. An image built with "
            "--build-arg EXTRAS=report makes them (docs/container.md).")
