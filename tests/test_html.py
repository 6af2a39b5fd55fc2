"""The pages' templates and charts as pure functions: escaping, phases in words, SVG that parses."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest

from monitor.policy.schema import Config
from monitor.present import svg
from monitor.present.html import Html, ago, e, phase_badge, table
from monitor.present.model_page import time_format
from monitor.present.summary import Facts, summarize
from monitor.present.verdict_page import VerdictView, verdict_page
from monitor.service.pages import _cells
from monitor.store import Verdict, VerdictKind
from monitor.vocabulary import Phase

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script> \"q\" & 'a'"
NS = "{http://www.w3.org/2000/svg}"


def test_plain_text_is_escaped_and_only_built_markup_passes() -> None:
    assert e(HOSTILE) == "&lt;script&gt;alert(1)&lt;/script&gt; &quot;q&quot; &amp; &#x27;a&#x27;"
    assert e(Html("<b>built</b>")) == "<b>built</b>"
    assert e(e(HOSTILE)) == e(HOSTILE), "escaped once, never twice"
    cells = table([HOSTILE], [[HOSTILE, (HOSTILE, "x\" onclick=\"y"), Html("<i>ok</i>")]])
    assert "<script" not in cells and "onclick=\"" not in cells and "<i>ok</i>" in cells


@pytest.mark.parametrize("phase", list(Phase))
def test_a_phase_is_a_word_on_its_colour(phase: Phase) -> None:
    badge = phase_badge(phase)
    assert f">{phase.value}</span>" in badge and f'class="phase {phase.value.lower()}"' in badge


def test_an_unknown_phase_is_shown_as_text_in_grey() -> None:
    assert phase_badge(HOSTILE) == f'<span class="phase inconclusive">{e(HOSTILE)}</span>'


def test_ago_and_the_time_axis() -> None:
    assert [ago(NOW - d, NOW) for d in (timedelta(seconds=5), timedelta(minutes=3), timedelta(hours=5),
                                        timedelta(days=2))] == ["just now", "3 min ago", "5 h ago", "2 d ago"]
    assert ago(NOW.replace(tzinfo=None), NOW) == "just now", "SQLite's naive datetimes are UTC"
    moment = NOW.timestamp()
    assert [time_format(span)(moment) for span in (60, 7200, 10 * 86400)] == [
        "12:00:00", "12-01 12:00", "2026-12-01"]


def test_a_line_chart_is_valid_svg_with_a_point_per_run() -> None:
    lines = [svg.Series(HOSTILE, [(0, 0.5), (10, 1.0)]), svg.Series("v2", [(5, 0.0)])]
    drawn = svg.line_chart(HOSTILE, lines, y_range=(0.0, 1.0))
    root = ET.fromstring(drawn)
    assert root.tag == f"{NS}svg" and root.attrib["aria-label"] == HOSTILE
    assert len(root.findall(f"{NS}polyline")) == 2 and len(root.findall(f"{NS}circle")) == 3
    top = [c for c in root.findall(f"{NS}circle") if c.findtext(f"{NS}title", "").endswith("1.00 at 10")]
    assert float(top[0].attrib["cy"]) == svg.PAD_TOP, "1.0 on a 0-1 axis is the top of the plot"
    dashes = [p.attrib["stroke-dasharray"] for p in root.findall(f"{NS}polyline")]
    assert dashes[0] != dashes[1], "lines differ by dash as well as colour"


def test_a_chart_without_runs_says_so() -> None:
    assert "no runs yet" in svg.line_chart("arithmetic", [svg.Series("v1", [])])


def test_the_interval_chart_puts_the_tolerance_between_zero_and_the_drop() -> None:
    root = ET.fromstring(svg.interval_chart(0.12, 0.07, 0.17, 0.05))
    tolerance = root.find(f"{NS}line[@class='tolerance']")
    estimate = root.find(f"{NS}circle[@class='estimate']")
    assert tolerance is not None and estimate is not None
    assert float(tolerance.attrib["x1"]) < float(estimate.attrib["cx"])
    assert root.findtext(f"{NS}title") == "drop +12.0 pts, bounds [+7.0, +17.0] pts, tolerance 5 pts"
    untold = ET.fromstring(svg.interval_chart(0.01, 0.0, 0.02, None))
    assert untold.find(f"{NS}line[@class='tolerance']") is None


def test_the_interval_chart_writes_fluency_in_nats_per_token() -> None:
    root = ET.fromstring(svg.interval_chart(0.0304, 0.017, 0.044, 0.05, kind="loglikelihood_rolling"))
    assert root.findtext(f"{NS}title") == ("drop +0.030 nats/token, bounds [+0.017, +0.044] nats/token, "
                                           "tolerance 0.05 nats/token")


def _verdict(**fields: object) -> Verdict:
    base: dict[str, object] = dict(id=7, model="bot", candidate="v2", baseline="v1", suite="s",
                                   capability="c", content_hash="h", phase="FAIL", diagnosis="knowledge_loss",
                                   reason=HOSTILE, created_at=NOW)
    return Verdict.model_validate({**base, **fields})


def _view(verdict: Verdict, kinds: list[VerdictKind], live: str, report: str | None = None) -> VerdictView:
    policy = Config.model_validate({"models": {"bot": {"versions": {"v1": {}, "v2": {}}, "baseline": "v1",
                                                       "live": "v2"}}, "suites": ["s"]}).policy
    facts = Facts(verdict, kinds, policy.rules_for("c"), policy.guards, live, [], [], None, None, "rb")
    return VerdictView(verdict, kinds, live, [], summarize(facts), [], report)


def test_a_verdict_from_before_rules_were_stored_shows_no_tolerance() -> None:
    kind = VerdictKind(verdict_id=7, kind="generate_until", phase="FAIL", reason=HOSTILE, n=40,
                       drop=0.2, low=0.1, high=0.3, baseline_score=0.9, candidate_score=0.7)
    page = verdict_page(_view(_verdict(rules=""), [kind], "v2", "no report here"), NOW)
    assert "+20.0 pts [+10.0, +30.0] pts" in page and "<script" not in page
    assert "<title>drop +20.0 pts, bounds [+10.0, +30.0] pts</title>" in page, "no tolerance line is drawn"
    assert "forgetmenot rollback bot --to v1" in page and "forgetmenot approve" not in page
    assert "90.0%" in page and "70.0%" in page, "scores as percentages, as every surface writes them"


def test_a_verdict_of_a_version_no_longer_live_offers_no_rollback() -> None:
    page = verdict_page(_view(_verdict(rules='{"max_drop": 0.05}'), [], "v1"), NOW)
    assert "no longer live" in page and "forgetmenot rollback" not in page
    assert 'href="/verdicts/7/report"' in page


def test_a_board_cell_prefers_the_live_versions_verdict() -> None:
    config = Config.model_validate({"models": {"bot": {"versions": {"v1": {}, "v2": {}, "v3": {}},
                                                       "baseline": "v1", "live": "v2"}}, "suites": ["s"]})
    older_live = _verdict(id=1, candidate="v2", phase="PASS")
    newer_other = _verdict(id=2, candidate="v3", phase="FAIL")
    assert _cells([older_live, newer_other], {}, config)["bot"]["c"].id == 1
    assert _cells([older_live, newer_other], {"bot": "v3"}, config)["bot"]["c"].id == 2
    only_other = _verdict(id=3, candidate="v3", phase="FAIL")
    assert _cells([only_other], {}, config)["bot"]["c"].id == 3, "no live verdict: the newest of any"
