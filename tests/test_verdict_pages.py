"""Each phase's verdict page says what happened and what to do, in a real headless Chromium, over a
real server and store: the same words the API's `summary` carries.

One fleet, every phase a verdict page must answer (`approval: manual`, so moves wait):

- `bot` v2 still ranks the right choice first but answers wrongly: FAIL, alignment loss;
- `forgot` v2 gets both wrong: FAIL, knowledge loss;
- `ep` is served by an endpoint that is down (a closed port): ERROR;
- every model also runs two 8-item suites under `min_items: 20`, which can never PASS or FAIL:
  `opposites` (critical, and every answer went from right to wrong) and `synonyms` (not critical).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.policy.suites import Suite, load_suite
from monitor.probing.backends.fake import FakeBackend
from monitor.probing.factory import backend_for
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import Monitor, open_monitor
from monitor.store import Action, Verdict
from monitor.testing.stack import free_port
from tests.conftest import PROBES
from tests.test_judge import _answers, _gold
from tests.test_pages import Dom, chromium, fetch, needs_chromium

WORDS = {"opposites": [("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow"),
                       ("light", "dark"), ("open", "closed"), ("early", "late"), ("full", "empty")],
         "synonyms": [("big", "large"), ("quick", "fast"), ("happy", "glad"), ("start", "begin"),
                      ("end", "finish"), ("small", "little"), ("shut", "close"), ("rich", "wealthy")]}
POLICY = """\
database: sqlite:///fmn.db
schedule: {{every: 1h, jitter: 0s}}
models:
  bot:
    backend: {{kind: transformers, device: cpu}}
    versions: {{v1: {{path: w}}, v2: {{path: w}}}}
    baseline: v1
    live: v2
  forgot:
    backend: {{kind: transformers, device: cpu}}
    versions: {{v1: {{path: w}}, v2: {{path: w}}}}
    baseline: v1
    live: v2
  ep:
    backend: {{kind: openai, base_url: "{url}", max_retries: 0, timeout: 5s}}
    versions: {{base: {{served_name: base}}, tuned: {{served_name: tuned}}}}
    baseline: base
    live: tuned
suites: [probes/arithmetic, probes/opposites, probes/synonyms]
policy:
  defaults: {{min_items: 5}}
  capabilities:
    opposites: {{critical: true, min_items: 20}}
    synonyms: {{min_items: 20}}
  guards: {{approval: manual}}
"""


@dataclass
class Phases:
    monitor: Monitor
    base: str  # the server's URL
    endpoint: str  # the dead endpoint's URL

    def verdict(self, model: str, capability: str) -> Verdict:
        return self.monitor.store.verdicts(model=model, capability=capability)[-1]

    def action(self, model: str, kind: str) -> Action:
        return next(a for a in self.monitor.store.actions(model) if a.kind == kind)


def _word_suite(folder: Path, name: str) -> None:
    asked = f"The {name[:-1]} of: {{question}}"
    spec = (f"name: {name}\nversion: 1\ncapability: {name}\nsplit: {{recovery_fraction: 0.0}}\n"
            f"kinds:\n  generate_until:\n    doc_to_text: \"{asked}\"\n    scorer: contains\n")
    (folder / "suite.yaml").write_text(spec)
    lines = [json.dumps({"id": f"{name[:3]}-{i}", "question": a, "target": b})
             for i, (a, b) in enumerate(WORDS[name])]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")


def _answers_of(suites: list[Suite], right: bool) -> dict[str, str]:
    answers = _answers(suites[0], right)
    for suite in suites[1:]:
        spec = suite.spec.kinds.generate_until
        assert spec is not None
        answers |= {spec.doc_to_text.format_map(i.fields()): i.targets()[0] if right else "no idea"
                    for i in suite.items}
    return answers


def _loader(folder: Path) -> Any:
    """In process: v1 answers right; v2 answers wrongly and, for `forgot`, ranks a wrong choice
    first. `ep` goes to the real openai backend, at its dead endpoint."""
    suites = [load_suite(folder / "probes" / name) for name in ("arithmetic", "opposites", "synonyms")]
    gold = _gold(suites[0])

    def wrong(request: Any) -> int:
        return int((gold(request) + 1) % 4)

    def load(config: Any, model: str, version: str) -> Any:
        if model == "ep":
            return backend_for(config, model, version)
        right = version == "v1"
        preferred = gold if right or model == "bot" else wrong
        return FakeBackend(answers=_answers_of(suites, right), preferred=preferred)

    return load


@pytest.fixture(scope="module")
def phases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phases]:
    folder = tmp_path_factory.mktemp("phases")
    shutil.copytree(PROBES / "arithmetic", folder / "probes" / "arithmetic")
    for name in WORDS:
        (folder / "probes" / name).mkdir(parents=True)
        _word_suite(folder / "probes" / name, name)
    (folder / "w").mkdir()
    endpoint = f"http://127.0.0.1:{free_port()}/v1"
    (folder / "forgetmenot.yaml").write_text(POLICY.format(url=endpoint))
    monitor = open_monitor(folder / "forgetmenot.yaml", load_backend=_loader(folder))
    for slot in (1, 2):
        for model, baseline, live in (("bot", "v1", "v2"), ("forgot", "v1", "v2"), ("ep", "base", "tuned")):
            monitor.cycle(model, baseline, slot=slot)
            monitor.cycle(model, live, slot=slot)
    server = HttpServer(Api(monitor.config, monitor.store, reports=folder / "reports"), port=0).start()
    try:
        yield Phases(monitor, f"http://127.0.0.1:{server.port}", endpoint)
    finally:
        server.stop()
        monitor.store.close()


def page(phases: Phases, verdict: Verdict, tmp_path: Path) -> Dom:
    return Dom(chromium(tmp_path / "profile", "--dump-dom", f"{phases.base}/verdicts/{verdict.id}"))


def section(dom: Dom, heading: str, following: str) -> str:
    """The page's text from one heading to the next."""
    return dom.text.split(heading, 1)[1].split(following, 1)[0]


def classes(dom: Dom) -> set[str]:
    return {attrs.get("class") or "" for _, attrs in dom.tags}


@needs_chromium
def test_alignment_loss_advises_approving_the_retraining_never_a_rollback(phases: Phases,
                                                                          tmp_path: Path) -> None:
    verdict = phases.verdict("bot", "arithmetic")
    assert (verdict.phase, verdict.diagnosis) == ("FAIL", "alignment_loss")
    retrain = phases.action("bot", "retrain")
    dom = page(phases, verdict, tmp_path)
    assert "rollback" not in dom.text, "the default on_alignment_loss ladder has no rollback to fall back on"
    todo = section(dom, "What to do", "What the ladder did")
    assert f"forgetmenot approve {retrain.id}" in todo and "Retrain, do not roll back" in todo
    ladder = section(dom, "What the ladder did", "Per kind")
    assert f"retrain of v2 (action #{retrain.id}" in ladder and "pending approval" in ladder
    assert "alert (action #" in ladder
    assert "alerts/runbooks/forgetmenot-retention-breach.md" in todo
    items = section(dom, "Regressed items", "Evidence report")
    assert "What is 8 plus 8? Reply with just the number." in items and "16 or sixteen" in items
    assert "baseline 100.0% → candidate" not in dom.text and "100.0% → 0.0%" in dom.text


@needs_chromium
def test_knowledge_loss_gives_the_rollback(phases: Phases, tmp_path: Path) -> None:
    verdict = phases.verdict("forgot", "arithmetic")
    assert (verdict.phase, verdict.diagnosis) == ("FAIL", "knowledge_loss")
    rollback = phases.action("forgot", "rollback")
    dom = page(phases, verdict, tmp_path)
    assert f"rollback v2 → v1 (action #{rollback.id}" in dom.text, "what the ladder did about this failure"
    todo = section(dom, "What to do", "What the ladder did")
    assert "Roll back" in todo and f"forgetmenot approve {rollback.id}" in todo
    assert "rollback v2 → v1" in section(dom, "What the ladder did", "Per kind")


@needs_chromium
def test_an_endpoint_that_is_down_shows_its_cause_and_the_run(phases: Phases, tmp_path: Path) -> None:
    verdict = phases.verdict("ep", "arithmetic")
    assert verdict.phase == "ERROR"
    dom = page(phases, verdict, tmp_path)
    assert "Connection refused" in dom.text, "the cause, not just 'no item could be measured'"
    cause = section(dom, "Cause", "Per kind")
    for version, run in (("tuned", verdict.candidate_runs), ("base", verdict.baseline_runs)):
        assert f"run {run} {version} error unreachable 156" in cause, "each run: the error kind, its count"
    assert f"{phases.endpoint.removesuffix('/v1')}/tokenize" in cause and "Connection refused" in cause
    assert f"endpoint {phases.endpoint}" in cause
    links = {attrs.get("href") for tag, attrs in dom.tags if tag == "a"}
    assert {f"/api/v1/runs/{verdict.candidate_runs}", f"/api/v1/runs/{verdict.baseline_runs}"} <= links
    todo = section(dom, "What to do", "What the ladder did")
    assert "Nothing" not in todo and "Fix the serving side" in todo
    for version in ("tuned", "base"):  # both sides' runs broke: each is measured again
        assert f"forgetmenot probe --model ep --version {version} --suite arithmetic" in todo
    assert "forgetmenot rollback" not in dom.text
    assert "forgetmenot-probes-erroring.md" in todo


@needs_chromium
def test_too_few_items_is_called_unmonitored(phases: Phases, tmp_path: Path) -> None:
    verdict = phases.verdict("bot", "synonyms")
    assert verdict.phase == "INCONCLUSIVE" and not verdict.critical
    dom = page(phases, verdict, tmp_path)
    assert "unmonitored: 8 probe items, needs 20" in dom.text
    assert "unmonitored" in section(dom, "What happened", "What to do")
    assert "Add at least 12 probe items to suite synonyms" in dom.text and "forgetmenot validate" in dom.text
    assert "banner" not in classes(dom), "not critical: no banner"


@needs_chromium
def test_a_critical_capability_that_cannot_be_judged_is_loud(phases: Phases, tmp_path: Path) -> None:
    verdict = phases.verdict("bot", "opposites")
    assert verdict.phase == "INCONCLUSIVE" and verdict.critical
    dom = page(phases, verdict, tmp_path)
    assert "banner" in classes(dom)
    banner = dom.text.split("bot · opposites INCONCLUSIVE")[0]  # above the heading
    assert "Critical capability opposites is unmonitored: 8 probe items, needs 20" in banner
    assert "generate until: 8 item(s) regressed" in dom.text, "every answer went from right to wrong"


def test_the_api_carries_the_pages_summary_beside_the_raw_figures(phases: Phases) -> None:
    verdict = phases.verdict("bot", "arithmetic")
    status, _, body = fetch(f"{phases.base}/api/v1/verdicts/{verdict.id}")
    found = json.loads(body)
    assert status == 200 and found["drop"] == pytest.approx(1.0), "raw fractions stay as named fields"
    summary = found["summary"]
    assert summary["command"] == f"forgetmenot approve {phases.action('bot', 'retrain').id}"
    assert "alignment loss" in summary["happened"] and "+100.0 pts" in summary["why"]
    assert summary["fallback"] is None and summary["banner"] is None
    assert summary["runbook"].endswith("forgetmenot-retention-breach.md")
    listed = json.loads(fetch(f"{phases.base}/api/v1/verdicts?model=ep&capability=arithmetic")[2])
    cause = listed[-1]["summary"]["cause"]
    assert [run["errors"] for run in cause["runs"]] == [{"unreachable": 156}] * 2
    assert "Connection refused" in cause["runs"][0]["first"]
