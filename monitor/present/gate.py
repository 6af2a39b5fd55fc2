"""The retention gate's answer for people and for CI systems: a table, and JUnit XML (what
GitLab, Jenkins, GitHub Actions' test reporters and Tekton read), one test case per suite and
reference version."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from rich.table import Table

from monitor import units
from monitor.judge.gate import Check, Gate
from monitor.present.tables import phase
from monitor.vocabulary import Kind, Phase


def gate_table(gate: Gate) -> Table:
    """Drops and tolerances in their kind's unit (`monitor.units`), a drop positive when worse."""
    table = Table(title=f"gate {gate.model} {gate.version}: {gate.decision.value}")
    for column in ("suite", "against", "phase", "diagnosis", "drop", "tolerance", "verdict"):
        table.add_column(column)
    for c in gate.checks:
        shown = phase(c.phase) if c.phase else "[dim]pending[/dim]"
        table.add_row(c.suite + (" (muted)" if c.muted else ""), c.baseline, shown, c.diagnosis or "",
                      _drop(c), _tolerance(c), str(c.verdict or ""))
    return table


def _drop(c: Check) -> str:
    if c.drop is None:
        return ""
    return units.drop_text(c.kind or Kind.GENERATE_UNTIL, c.drop)


def _tolerance(c: Check) -> str:
    """A check from an older remote monitor has no kind and no tolerance: its `max_drop` is an
    accuracy tolerance."""
    if c.tolerance is None and c.max_drop is None:
        return ""
    limit = c.tolerance if c.tolerance is not None else c.max_drop
    return units.tolerance_text(c.kind or Kind.GENERATE_UNTIL, limit)


def junit_xml(gate: Gate) -> str:
    """One <testsuite>; FAIL is a <failure>, ERROR an <error>, anything short of PASS <skipped>."""
    counted = [c for c in gate.checks if c.counted]
    suite = ET.Element("testsuite", name=f"forgetmenot gate {gate.model} {gate.version}",
                       tests=str(len(gate.checks)),
                       failures=str(sum(c.phase == Phase.FAIL for c in counted)),
                       errors=str(sum(c.phase == Phase.ERROR for c in counted)),
                       skipped=str(sum(_skipped(c) for c in gate.checks)),
                       time=f"{gate.waited_s:.3f}")
    properties = ET.SubElement(suite, "properties")
    for name, value in (("decision", gate.decision.value), ("reason", gate.reason)):
        ET.SubElement(properties, "property", name=name, value=value)
    for c in gate.checks:
        case = ET.SubElement(suite, "testcase", classname=f"{gate.model}.{gate.version}",
                             name=f"{c.suite} against {c.baseline}")
        message = f"{c.phase or 'pending'}: {c.reason}"
        if c.counted and c.phase == Phase.FAIL:
            ET.SubElement(case, "failure", message=message, type=c.diagnosis or "FAIL").text = message
        elif c.counted and c.phase == Phase.ERROR:
            ET.SubElement(case, "error", message=message, type="ERROR").text = message
        elif _skipped(c):
            ET.SubElement(case, "skipped", message=("muted: " if c.muted else "") + message)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def write_junit(gate: Gate, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(gate), encoding="utf-8")


def _skipped(c: Check) -> bool:
    return c.muted or c.phase not in (Phase.PASS, Phase.FAIL, Phase.ERROR)
