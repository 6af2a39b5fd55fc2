"""The CLI's tables in an 80-column terminal: every header whole, no line past the edge, and long
texts (an action's detail) as paragraphs rather than a column a few characters wide."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from monitor.present import tables
from monitor.present.tables import Conclusion, Row
from monitor.store import Action, KindSummary, Run
from monitor.vocabulary import Diagnosis, Phase

WHEN = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
DETAIL = ("20 recovery examples (general-knowledge 10, arithmetic 10; 14 in the baseline's own words) + "
          "20 replay examples; LoRA r16 on 40 examples, 4 epochs on cpu, 54 s, last loss 0.017 → v2-r3")


def _render(renderable: Any, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def _header(lines: list[str], first: str) -> str:
    return next(line for line in lines if first in line)


def _demo_rows() -> list[Row]:
    return [Row("general-knowledge", "multiple_choice", 0.699, 0.670, 176),
            Row("general-knowledge", "generate_until", 0.568, 0.0, 176),
            Row("instruction-format", "generate_until", 0.293, 0.224, 58),
            Row("fluency", "loglikelihood_rolling", -3.331, -3.361, 35)]


def _verdict_rows() -> list[tuple[Any, list[Any]]]:
    verdict = SimpleNamespace(id=12, capability="general-knowledge", muted=False,
                              diagnosis="alignment_loss")
    kinds = [SimpleNamespace(kind=kind, baseline_score=0.7, candidate_score=0.1, drop=0.6, low=0.5,
                             high=0.7, p_value=1e-9, phase=Phase.FAIL)
             for kind in ("multiple_choice", "generate_until")]
    return [(verdict, kinds)]


def _runs() -> tuple[list[Run], dict[int, list[KindSummary]]]:
    run = Run(id=7, model="support-bot", version="v2-r3", suite="general-knowledge", capability="gk",
              split="probe", backend="transformers", device="cpu", dtype="float32", status="complete",
              started_at=WHEN)
    return [run], {7: [KindSummary("multiple_choice", 0.67, 176, 0),
                       KindSummary("generate_until", 0.57, 176, 2)]}


def _tables(width: int) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """Each table with the headers that must show whole."""
    runs, summaries = _runs()
    figures = [SimpleNamespace(suite="general-knowledge", kind="generate_until", baseline=0.568, before=0.0,
                               after=0.574, recovered=lambda: 1.01)]
    heard = "re-elicited 45.7% (baseline 84.8%): came back; witnesses one"
    conclusions = [Conclusion("general-knowledge", Phase.FAIL, Diagnosis.ALIGNMENT_LOSS, False,
                              ("alert", "retrain"), heard)]
    return {
        "demo": (tables.comparison_table(_demo_rows(), "v1", "v2", "what the fine-tune did", width),
                 ("capability", "measured as", "v1", "v2", "drop", "items")),
        "conclusions": (tables.conclusions_table(conclusions, "what the monitor concludes"),
                        ("capability", "phase", "diagnosis", "the policy would")),
        "judge": (tables.verdicts_table(_verdict_rows(), "support-bot: v2 vs v1", width),
                  ("id", "capability", "kind", "drop", "phase", "diagnosis")),
        "probe": (tables.runs_table(runs, summaries, "support-bot/v2-r3", width),
                  ("run", "when (UTC)", "version", "suite", "kind", "score", "items", "errors", "status")),
        "recovery": (tables.recovery_table(figures, "v1", "v2", "v2-r3", width),
                     ("suite", "measured as", "v1", "v2", "v2-r3", "recovered")),
    }


@pytest.mark.parametrize("name", ["demo", "conclusions", "judge", "probe", "recovery"])
def test_tables_fit_80_columns_with_every_header_whole(name: str) -> None:
    table, headers = _tables(80)[name]
    lines = _render(table)
    assert max(len(line) for line in lines) <= 80
    header = _header(lines, headers[0])
    for column in headers:
        assert f" {column} " in f" {header} ", f"{name}: header '{column}' cut: {header!r}"
    assert "…" not in "\n".join(lines), f"{name}: a cell was cut:\n" + "\n".join(lines)


def test_the_second_witness_reads_whole_under_the_conclusions_at_80_columns() -> None:
    lines = _render(_tables(80)["conclusions"][0])
    bottom = next(i for i, line in enumerate(lines) if line.startswith("└"))
    under = " ".join(line.strip() for line in lines[bottom + 1 :])
    assert under == "general-knowledge: re-elicited 45.7% (baseline 84.8%): came back; witnesses one"


def test_wide_terminals_keep_the_full_tables() -> None:
    lines = _render(_tables(160)["demo"][0], width=160)
    assert any("knows (multiple-choice log-likelihood)" in line for line in lines)
    judge = _render(_tables(160)["judge"][0], width=160)
    assert "bounds" in _header(judge, "capability")


def test_the_audit_trail_prints_details_as_paragraphs_in_80_columns() -> None:
    action = Action(id=3, model="support-bot", kind="retrain", trigger="verdict", verdict_id=1, status="done",
                    from_version="v2", to_version="v2-r3", actor="demo", reason="general-knowledge: FAIL",
                    detail=DETAIL, created_at=WHEN)
    lines = _render(tables.actions_table([action], "audit trail", 80))
    assert max(len(line) for line in lines) <= 80
    detail_lines = [line for line in lines if any(word in line for word in ("recovery", "replay", "LoRA"))]
    assert len(detail_lines) <= 4, "the detail wrapped into a narrow column:\n" + "\n".join(lines)
    text = " ".join(" ".join(lines).split())
    assert "last loss 0.017 → v2-r3" in text


def _hard_verdicts() -> list[tuple[Any, list[Any]]]:
    """The longest phase and diagnosis, a muted capability and both units."""
    verdict = SimpleNamespace(id=1234, capability="instruction-format", muted=True,
                              diagnosis="alignment_loss")
    answers = SimpleNamespace(kind="generate_until", baseline_score=0.7, candidate_score=0.1, drop=0.6,
                              low=0.5, high=0.7, p_value=1e-9, phase=Phase.INCONCLUSIVE)
    fluency = SimpleNamespace(kind="loglikelihood_rolling", baseline_score=-3.331, candidate_score=-3.361,
                              drop=0.0304, low=0.01, high=0.05, p_value=0.02, phase=Phase.MARGINAL)
    knowledge = SimpleNamespace(id=1235, capability="general-knowledge", muted=False,
                                diagnosis="knowledge_loss")
    return [(verdict, [answers, fluency]), (knowledge, [answers])]


@pytest.mark.parametrize("width", [80, 120])
def test_judge_keeps_the_verdict_id_phase_and_diagnosis_whole(width: int) -> None:
    lines = _render(tables.verdicts_table(_hard_verdicts(), "support-bot: v2 vs v1", width), width)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= width, text
    words = text.split()
    for whole in ("1234", "1235", "INCONCLUSIVE", "MARGINAL", "alignment_loss", "knowledge_loss"):
        assert whole in words, f"'{whole}' cut or missing at {width} columns:\n{text}"
    assert "…" not in text, text


@pytest.mark.parametrize("width", [80, 120, 180])
def test_judge_writes_drops_and_bounds_in_one_unit_and_sign(width: int) -> None:
    """As `monitor.units` writes them: positive when worse, points or nats per token."""
    table = tables.verdicts_table(_hard_verdicts(), "t", width)
    cells = {column.header: list(column.cells) for column in table.columns}
    assert cells["drop"] == ["+60.0 pts", "+0.030 nats/token", "+60.0 pts"]
    if width >= tables.NARROW:
        assert cells["bounds"] == ["[+50.0, +70.0] pts", "[+0.010, +0.050] nats/token", "[+50.0, +70.0] pts"]
