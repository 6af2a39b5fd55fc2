"""Run a probe suite on one model version and keep every item's result.

Work goes to the backend in chunks so progress can be shown and so a failing chunk costs only
its own items: they are stored with an error kind (`error_kind`), never as wrong answers. That
holds whatever breaks: a BackendError keeps its kind, anything else a backend raises (a bug, an
answer of a shape nobody foresaw) is `runtime`, and a scorer that cannot judge an answer (a
pattern past its time bound) leaves that one item a `scorer` error. Only a stop ends a run. A run
is `complete` when at least one item was scored, `error` when none could be, and `interrupted`
when the process was stopped part way. If the database goes away mid-run, what was measured is
kept in the spool (`monitor.probing.spool`) and the error says where: nothing measured is lost.
A complete run of the probe split against a named baseline also measures safety depth
(`monitor.probing.depth`) and keeps it with the run.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

from monitor.errors import BackendError, Stopping, StoreError
from monitor.policy.suites import (
    GenerateSpec,
    Item,
    Kind,
    MultipleChoiceSpec,
    RollingSpec,
    Split,
    Suite,
    generation_correct,
    render,
)
from monitor.probing.backends.base import Backend, GenerationRequest, LoglikelihoodRequest
from monitor.probing.depth import measure_in_run
from monitor.probing.spool import Spool
from monitor.store import ItemResult, Run, Store
from monitor.store.runs import ended_as
from monitor.vocabulary import ErrorKind, RunStatus

Advance = Callable[[int], None]
_OUTPUT_EXCERPT = 500
_ERROR_EXCERPT = 1000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionRef:
    """A version to measure; `baseline`, the version it is judged against, where depth needs it."""

    model: str
    version: str
    baseline: str | None = None


def work_units(suite: Suite, split: Split = Split.PROBE) -> int:
    """How many item-measurements a run of `suite` makes (for progress bars)."""
    return len(suite.select(split)) * len(suite.kinds)


def open_run(store: Store, suite: Suite, ref: VersionRef, *, backend: str, device: str, dtype: str,
             split: Split = Split.PROBE, holder: str | None = None) -> Run:
    """Register the suite's content and start a `running` run of it on one version."""
    record = store.ensure_suite(suite.name, suite.spec.version, suite.capability, suite.content_hash)
    return store.start_run(model=ref.model, version=ref.version, suite_id=record.id, suite=suite.name,
                           capability=suite.capability, split=split, backend=backend, device=device,
                           dtype=dtype, holder=holder)


def probe_suite(store: Store, backend: Backend, suite: Suite, ref: VersionRef, *,
                split: Split = Split.PROBE, advance: Advance | None = None, holder: str | None = None,
                spool: Spool | None = None) -> Run:
    """Measure `suite` on `backend` and store the run; returns the finished Run row."""
    info = backend.info
    run = open_run(store, suite, ref, backend=info.kind, device=info.device, dtype=info.dtype,
                   split=split, holder=holder)
    assert run.id is not None
    measured: list[ItemResult] = []
    kinds_done = 0
    try:
        for kind in suite.kinds:
            results = score_kind(backend, suite, kind, suite.select(split), advance)
            measured += results
            kinds_done += 1
            store.add_results(run.id, results)
        status, error = ended_as(measured)
        if status == RunStatus.COMPLETE and split == Split.PROBE:
            deep = measure_in_run(store, backend, suite, ref, measured)
            measured += deep
            store.add_results(run.id, deep)
        return store.finish_run(run.id, status, error=error)
    except StoreError as exc:
        saved = (spool or Spool()).keep(run, suite, measured, complete=kinds_done == len(suite.kinds))
        raise StoreError(f"{exc}; the {len(measured)} results measured so far are saved in {saved}") from exc
    except BaseException:
        with suppress(StoreError):
            store.finish_run(run.id, RunStatus.INTERRUPTED)
        raise


def score_kind(backend: Backend, suite: Suite, kind: Kind, items: Sequence[Item],
               advance: Advance | None = None) -> list[ItemResult]:
    size = backend.chunk_size
    results: list[ItemResult] = []
    for start in range(0, len(items), size):
        chunk = items[start : start + size]
        results += _score_chunk(backend, suite, kind, chunk)
        if advance:
            advance(len(chunk))
    return results


def _score_chunk(backend: Backend, suite: Suite, kind: Kind, chunk: Sequence[Item]) -> list[ItemResult]:
    began = time.perf_counter()
    try:
        results = _MEASURE[kind](backend, suite, chunk)
    except BackendError as exc:
        return _failed(chunk, kind, exc.kind, str(exc))
    except Stopping:
        raise
    except Exception as exc:  # a bug or an unforeseen failure costs this chunk, not the run
        log.exception("%s: measuring %d items as %s raised", suite.name, len(chunk), kind)
        return _failed(chunk, kind, _unforeseen_kind(exc), f"{type(exc).__name__}: {exc}")
    per_item = (time.perf_counter() - began) * 1000 / max(len(chunk), 1)
    for result in results:
        result.latency_ms = per_item
    return results


def _failed(chunk: Sequence[Item], kind: Kind, error_kind: str, error: str) -> list[ItemResult]:
    return [ItemResult(item_id=i.id, kind=kind, error_kind=error_kind, error=error[:_ERROR_EXCERPT])
            for i in chunk]


def _unforeseen_kind(exc: Exception) -> ErrorKind:
    """A MemoryError is measured like any other failure, as `oom`: the allocation that failed is
    what unwinding releases, so the process can usually record it and try the next chunk (whose
    batch may fit); if it cannot, the store write after it raises and the run ends interrupted."""
    if isinstance(exc, MemoryError):
        return ErrorKind.OOM
    return ErrorKind.RUNTIME


def _multiple_choice(backend: Backend, suite: Suite, chunk: Sequence[Item]) -> list[ItemResult]:
    spec = suite.spec.kinds.multiple_choice
    assert isinstance(spec, MultipleChoiceSpec)
    requests = [LoglikelihoodRequest(render(spec.doc_to_text, item),
                                     tuple(spec.target_delimiter + c for c in item.choices or []))
                for item in chunk]
    return [_choice_result(item, scores)
            for item, scores in zip(chunk, backend.loglikelihood(requests), strict=True)]


def _choice_result(item: Item, scores: list[float]) -> ItemResult:
    """Prediction is the most likely choice; the margin says by how much gold won or lost."""
    assert item.choices is not None and item.gold is not None
    if len(scores) != len(item.choices) or not all(math.isfinite(s) for s in scores):
        return ItemResult(item_id=item.id, kind=Kind.MULTIPLE_CHOICE, error_kind=ErrorKind.INVALID_RESPONSE,
                          error=f"backend returned {scores!r} for {len(item.choices)} choices")
    predicted = max(range(len(scores)), key=scores.__getitem__)
    rival = max(s for i, s in enumerate(scores) if i != item.gold)
    correct = predicted == item.gold
    return ItemResult(item_id=item.id, kind=Kind.MULTIPLE_CHOICE, score=float(correct),
                      correct=correct, margin=scores[item.gold] - rival,
                      output=item.choices[predicted])


def _generate_until(backend: Backend, suite: Suite, chunk: Sequence[Item]) -> list[ItemResult]:
    spec = suite.spec.kinds.generate_until
    assert isinstance(spec, GenerateSpec)
    requests = [GenerationRequest(render(spec.doc_to_text, item), spec.max_new_tokens,
                                  tuple(spec.until), spec.system_prompt) for item in chunk]
    outputs = backend.generate(requests)
    return [_judged(item, spec, output) for item, output in zip(chunk, outputs, strict=True)]


def _judged(item: Item, spec: GenerateSpec, output: str) -> ItemResult:
    """One answer scored. The answer is the model's, so untrusted: a scorer that raises or runs
    out of time has not judged it, and the item is an error, never a wrong answer."""
    excerpt = output[:_OUTPUT_EXCERPT]
    try:
        correct = generation_correct(item, spec, output)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_EXCERPT]
        log.warning("item %s could not be scored: %s", item.id, error)
        return ItemResult(item_id=item.id, kind=Kind.GENERATE_UNTIL, error_kind=ErrorKind.SCORER,
                          error=error, output=excerpt)
    return ItemResult(item_id=item.id, kind=Kind.GENERATE_UNTIL, score=float(correct), correct=correct,
                      output=excerpt)


def _rolling(backend: Backend, suite: Suite, chunk: Sequence[Item]) -> list[ItemResult]:
    """Score is the mean log-probability per token (higher is better); perplexity is exp(-score)."""
    spec = suite.spec.kinds.loglikelihood_rolling
    assert isinstance(spec, RollingSpec)
    measured = backend.loglikelihood_rolling([render(spec.doc_to_text, item) for item in chunk])
    results = []
    for item, value in zip(chunk, measured, strict=True):
        mean = value.logprob / max(value.tokens, 1)
        results.append(ItemResult(item_id=item.id, kind=Kind.LOGLIKELIHOOD_ROLLING, score=mean,
                                  output=f"perplexity {math.exp(-mean):.2f} over {value.tokens} tokens"))
    return results


_MEASURE: dict[Kind, Callable[[Backend, Suite, Sequence[Item]], list[ItemResult]]] = {
    Kind.MULTIPLE_CHOICE: _multiple_choice,
    Kind.GENERATE_UNTIL: _generate_until,
    Kind.LOGLIKELIHOOD_ROLLING: _rolling,
}
