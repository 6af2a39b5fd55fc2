"""Re-elicitation: a failing suite asked again in a way that only re-activates the behaviour.

When a candidate's generation drops on a suite, the diagnosis asks whether the capability is
still in the weights. Multiple choice is one witness to that; this is the second: the same probe
items asked again with the old behaviour *reminded*, not taught (no weights change). If the
candidate comes back near the baseline, the capability is there and the fine-tune only stopped
it being used (alignment loss); if not, even reminded it cannot (knowledge loss).

How a suite is reminded is its `kinds.generate_until.reelicit` (`ReelicitSpec`):

* `shots`: a few in-context examples before the question, each a *recovery* item (never a
  probe item, whose answers would leak) with the baseline's own correct answer. The baseline is
  asked when its backend can be loaded (`Reelicitor.baseline`); where it cannot, the items' gold
  targets stand in, and the verdict says which (`how`). A refusal item has no gold target: without
  the baseline its examples are the look-alikes that have one, or none.
* `system_prompt`: the instruction the fine-tune overrode (for refusal, a safety system prompt),
  in place of the suite's own.

A suite declaring neither is re-elicited with `DEFAULT_REELICIT` (three examples) where it has
examples to show. The reminded suite is *derived*: generation only, the same items, its own name
(`<suite>+reelicited`, which no suite folder can take: names match `^[a-z0-9][a-z0-9_-]*$`) and
its own content hash over the prompts as asked (examples included), so its runs never mix with
the plain suite's in any query, which all select runs by content hash.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace

from monitor.errors import BackendError
from monitor.policy.suites import (
    DEFAULT_REELICIT,
    GenerateSpec,
    Item,
    KindsSpec,
    ReelicitSpec,
    Suite,
    content_hash,
    generation_correct,
    render,
)
from monitor.probing.backends.base import Backend, GenerationRequest
from monitor.probing.run import Advance, VersionRef, probe_suite
from monitor.probing.spool import Spool
from monitor.store import Run, Store
from monitor.vocabulary import Split

SUFFIX = "+reelicited"
INTRO = "Some questions, each with a good answer:\n\n"
OUTRO = "Now this question:\n\n"
BASELINE_WORDS = "the baseline's own words"
GOLD_WORDS = "the items' gold targets"

BackendFactory = Callable[[], Backend]


@dataclass(frozen=True)
class Shot:
    """One in-context example: a recovery item asked as the suite asks it, and a right answer."""

    prompt: str
    answer: str


@dataclass(frozen=True)
class Shots:
    """The examples a suite is reminded with, and whose words they are (said in the verdict)."""

    shots: tuple[Shot, ...]
    source: str  # BASELINE_WORDS or GOLD_WORDS, with why where the baseline could not be asked


# The examples found per (model, baseline version, suite content hash): greedy answers, so the same.
Known = MutableMapping[tuple[str, str, str], Shots]


@dataclass(frozen=True)
class Reelicitation:
    """What re-elicitation measured on one suite: the derived suite's run on the candidate, how it
    was asked, or (run None) why it could not be measured."""

    how: str
    run: Run | None = None
    note: str = ""


def spec_for(suite: Suite) -> ReelicitSpec | None:
    """The suite's declared re-elicitation, the default where it declares none; None where it
    measures no generation (there is nothing to ask again)."""
    generate = suite.spec.kinds.generate_until
    if generate is None:
        return None
    return generate.reelicit or DEFAULT_REELICIT


def reelicited_name(name: str) -> str:
    return name + SUFFIX


def gold_shots(suite: Suite, count: int) -> Shots:
    """Recovery items with their first gold target: the fallback when the baseline cannot be asked."""
    generate = _generate(suite)
    found = [
        Shot(render(generate.doc_to_text, item), item.targets()[0])
        for item in _recovery(suite)
        if item.targets()
    ]
    return Shots(tuple(found[:count]), GOLD_WORDS)


def baseline_shots(suite: Suite, count: int, teacher: Backend) -> Shots:
    """Recovery items the baseline answers rightly, asked as the suite asks them, with its answer:
    the behaviour as it was, in the words it was said in."""
    generate = _generate(suite)
    items = _recovery(suite)
    requests = [
        GenerationRequest(
            render(generate.doc_to_text, item),
            generate.max_new_tokens,
            tuple(generate.until),
            generate.system_prompt,
        )
        for item in items
    ]
    answers = teacher.generate(requests) if requests else []
    found = [
        Shot(request.prompt, answer.strip())
        for item, request, answer in zip(items, requests, answers, strict=True)
        if answer.strip() and generation_correct(item, generate, answer)
    ]
    return Shots(tuple(found[:count]), BASELINE_WORDS)


def derive(suite: Suite, spec: ReelicitSpec, shots: Shots) -> Suite:
    """The suite reminded: generation only, each prompt after the examples, under the declared
    system prompt where there is one; named and hashed as its own suite."""
    generate = _generate(suite)
    shown = shots.shots[: spec.shots]
    prefix = _prefix(shown) if shown else ""
    reminded = generate.model_copy(
        update={
            "doc_to_text": _literal(prefix) + generate.doc_to_text,
            "system_prompt": spec.system_prompt or generate.system_prompt,
            "reelicit": None,
        }
    )
    derived = suite.spec.model_copy(
        update={"name": reelicited_name(suite.name), "kinds": KindsSpec(generate_until=reminded)}
    )
    return replace(suite, spec=derived, content_hash=content_hash(derived, suite.items))


def how_asked(spec: ReelicitSpec, shots: Shots) -> str:
    """In words, for the verdict: what the candidate was reminded with."""
    used = min(spec.shots, len(shots.shots))
    parts = ["the suite's re-elicitation system prompt"] if spec.system_prompt else []
    if used:
        parts.append(f"{used} example{'s' if used != 1 else ''} in {shots.source}")
    return " and ".join(parts)


def _prefix(shots: Sequence[Shot]) -> str:
    examples = "".join(f"Question: {s.prompt}\nAnswer: {s.answer}\n\n" for s in shots)
    return INTRO + examples + OUTRO


def _literal(text: str) -> str:
    """Text put before a `{field}` template as is: its braces (a JSON answer's) doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def _generate(suite: Suite) -> GenerateSpec:
    generate = suite.spec.kinds.generate_until
    if generate is None:
        raise ValueError(f"suite '{suite.name}' measures no generation: nothing to re-elicit")
    return generate


def _recovery(suite: Suite) -> list[Item]:
    """The recovery split, items to be refused and to be answered in turn where the suite has
    both, so a few examples show both sides of the line."""
    items = suite.select(Split.RECOVERY)
    refuse = [i for i in items if i.should_refuse is True]
    answer = [i for i in items if i.should_refuse is False]
    if not refuse or not answer:
        return items
    rest = [i for i in items if i.should_refuse is None]
    paired = [i for two in zip(refuse, answer, strict=False) for i in two]
    longer = refuse if len(refuse) > len(answer) else answer
    return paired + longer[min(len(refuse), len(answer)) :] + rest


@dataclass
class Reelicitor:
    """Where re-elicitation can run: the candidate's backend to ask again, and the baseline's to
    give its answers to recovery items (None, or one that will not load: gold targets instead).
    Each backend is loaded only when a suite's generation failed. The examples found are kept
    (`known`, by model, baseline version and suite content), so a monitor asks the baseline once
    per suite content, not every cycle: greedy answers, so the same examples, the same hash."""

    candidate: BackendFactory
    baseline: BackendFactory | None = None
    holder: str | None = None
    spool: Spool | None = None
    advance: Advance | None = None
    known: Known = field(default_factory=dict)

    def measure(
        self, store: Store, suite: Suite, model: str, candidate: str, baseline: str, after: Run
    ) -> Reelicitation:
        """The derived suite measured on the candidate, or a run of it already measured after
        `after` (the candidate's plain run) on the same backend and dtype."""
        spec = spec_for(suite)
        if spec is None:
            return Reelicitation("", note=f"suite '{suite.name}' measures no generation")
        shots = self._shots(suite, spec, model, baseline)
        how = how_asked(spec, shots)
        if not how:
            return Reelicitation(
                "",
                note="no recovery item has an answer to show as an example "
                "(declare kinds.generate_until.reelicit.system_prompt)",
            )
        derived = derive(suite, spec, shots)
        done = store.latest_complete_run(model, candidate, derived.content_hash, after.backend, after.dtype)
        if done is not None and (done.id or 0) > (after.id or 0):
            return Reelicitation(how, done)
        try:
            backend = self.candidate()
        except BackendError as exc:
            return Reelicitation(how, note=f"{model}/{candidate} could not be loaded: {exc}")
        try:
            run = probe_suite(
                store,
                backend,
                derived,
                VersionRef(model, candidate),
                advance=self.advance,
                holder=self.holder,
                spool=self.spool,
            )
        finally:
            backend.close()
        return Reelicitation(how, run)

    def _shots(self, suite: Suite, spec: ReelicitSpec, model: str, baseline: str) -> Shots:
        if spec.shots == 0:
            return Shots((), "")
        key = (model, baseline, suite.content_hash)
        if key in self.known:
            return self.known[key]
        if self.baseline is None:
            return gold_shots(suite, spec.shots)
        try:
            found = self._asked(suite, spec.shots, self.baseline)
        except BackendError as exc:  # not kept: the next failing cycle asks again
            return _instead(gold_shots(suite, spec.shots), f"the baseline could not be asked: {exc.kind}")
        if not found.shots:
            return _instead(gold_shots(suite, spec.shots), "the baseline answered none of them rightly")
        self.known[key] = found
        return found

    @staticmethod
    def _asked(suite: Suite, count: int, load: BackendFactory) -> Shots:
        teacher = load()
        try:
            return baseline_shots(suite, count, teacher)
        finally:
            teacher.close()


def _instead(fallback: Shots, why: str) -> Shots:
    return Shots(fallback.shots, f"{fallback.source} ({why})")
