"""Evidence for humans: an evidently HTML report per verdict, candidate against baseline outputs.

Only descriptors that work offline are used (text length, word count, JSON validity, refusal via
our own detector); evidently's OOV, semantic and Hugging Face descriptors download data and
are not used.
"""

from __future__ import annotations

import hashlib
import html
import warnings
from pathlib import Path
from typing import Any

from monitor.errors import MissingExtra
from monitor.policy.scorers import is_refusal
from monitor.store import ItemResult, Store, Verdict, redact
from monitor.vocabulary import Kind


def _evidently() -> Any:
    try:
        import evidently
    except ImportError as exc:
        raise MissingExtra("evidently", "report") from exc
    return evidently


def report_name(database_url: str, verdict: Verdict) -> str:
    """The file a verdict's report is kept in, named by the database the verdict is in (its URL,
    without the password) and by the verdict's content: monitors sharing a reports folder, or a
    database made anew whose ids start again at 1, never serve each other's reports. The time is
    read as stored (a database may hand it back without its zone)."""
    made = verdict.created_at.replace(tzinfo=None).isoformat()
    content = (redact(database_url), str(verdict.id), made, verdict.model, verdict.candidate,
               verdict.baseline, verdict.suite, verdict.candidate_runs, verdict.baseline_runs, verdict.rules)
    digest = hashlib.sha256("\n".join(content).encode()).hexdigest()[:16]
    return f"verdict-{verdict.id}-{digest}.html"


def write_report(store: Store, verdict_id: int, folder: Path) -> Path:
    """Compare the verdict's candidate outputs (current) with the baseline's (reference), in
    `folder` under the verdict's `report_name`."""
    _evidently()
    from evidently import Report
    from evidently.presets import TextEvals

    found = store.get_verdict(verdict_id)
    if found is None:
        raise ValueError(f"verdict {verdict_id} does not exist")
    verdict, kinds = found
    # Free text is what the descriptors describe; multiple-choice "outputs" are just choice labels.
    shown = Kind.GENERATE_UNTIL if any(k.kind == Kind.GENERATE_UNTIL for k in kinds) else None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / report_name(store.url, verdict)
    with warnings.catch_warnings():  # evidently divides by zero on all-empty columns
        warnings.simplefilter("ignore", RuntimeWarning)
        current = _dataset(_results(store, verdict.candidate_runs, shown))
        reference = _dataset(_results(store, verdict.baseline_runs, shown))
        Report([TextEvals()]).run(current, reference).save_html(str(path))
    _entitle(path, report_title(verdict))
    return path


def report_title(verdict: Verdict) -> str:
    """'bot v2 vs v1: arithmetic, verdict 7 (FAIL)': which versions the report compares."""
    versions = f"{verdict.model} {verdict.candidate} vs {verdict.baseline}"
    return f"{versions}: {verdict.capability}, verdict {verdict.id} ({verdict.phase})"


def _entitle(path: Path, title: str) -> None:
    """evidently's page has no title of its own: the tab and the first line name the versions."""
    shown = html.escape(title)
    page = path.read_text(encoding="utf-8")
    page = page.replace("<head>", f"<head>\n<title>{shown}</title>", 1)
    heading = f'<h1 style="font: 600 1.3em sans-serif; margin: 1em">{shown}</h1>'
    page = page.replace("<body>", f"<body>\n{heading}", 1)
    path.write_text(page, encoding="utf-8")


def _results(store: Store, run_ids: str, kind: str | None) -> list[ItemResult]:
    return [r for run in run_ids.split(",") if run for r in store.results(int(run), kind=kind)]


def _dataset(results: list[ItemResult]) -> Any:
    import pandas as pd
    from evidently import DataDefinition, Dataset
    from evidently.descriptors import CustomColumnDescriptor, IsValidJSON, TextLength, WordCount

    frame = pd.DataFrame({
        "output": [r.output or "" for r in results],
        "kind": [r.kind for r in results],
        "correct": [float(r.correct) if r.correct is not None else float("nan") for r in results],
        "error": ["yes" if r.error_kind else "no" for r in results],
    })
    descriptors = [TextLength("output", alias="length (chars)"), WordCount("output", alias="words"),
                   IsValidJSON("output", alias="valid JSON"),
                   CustomColumnDescriptor("output", _refusal, alias="refusal")]
    definition = DataDefinition(text_columns=["output"], numerical_columns=["correct"],
                                categorical_columns=["kind", "error"])
    return Dataset.from_pandas(frame, data_definition=definition, descriptors=descriptors)


def _refusal(column: Any) -> Any:
    import pandas as pd
    from evidently.core.datasets import DatasetColumn

    return DatasetColumn(type="cat", data=pd.Series(["yes" if is_refusal(str(x)) else "no"
                                                     for x in column.data]))
