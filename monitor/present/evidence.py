"""Evidence for humans: an evidently HTML report per verdict, candidate against baseline outputs.

Only descriptors that work offline are used (text length, word count, JSON validity, refusal via
our own detector); evidently's OOV, semantic and Hugging Face descriptors download data and
are not used.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from monitor.errors import MissingExtra
from monitor.policy.scorers import is_refusal
from monitor.store import ItemResult, Store
from monitor.vocabulary import Kind


def _evidently() -> Any:
    try:
        import evidently
    except ImportError as exc:
        raise MissingExtra("evidently", "report") from exc
    return evidently


def write_report(store: Store, verdict_id: int, folder: Path) -> Path:
    """Compare the verdict's candidate outputs (current) with the baseline's (reference)."""
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
    name = f"verdict-{verdict_id}-{verdict.capability}-{verdict.candidate}-vs-{verdict.baseline}.html"
    path = folder / name
    with warnings.catch_warnings():  # evidently divides by zero on all-empty columns
        warnings.simplefilter("ignore", RuntimeWarning)
        current = _dataset(_results(store, verdict.candidate_runs, shown))
        reference = _dataset(_results(store, verdict.baseline_runs, shown))
        Report([TextEvals()]).run(current, reference).save_html(str(path))
    return path


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
