"""What a probe item asked and what it expected, as a person reads them beside the two answers.

The prompt is the kind's template filled with the item (what the model was sent, less any system
prompt); the expected answer follows the item's scorer: the targets for `contains` and `exact`,
the right choice for multiple choice, the pattern or keys where those decide, whether a refusal
was wanted for `refusal`.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.policy.suites import GenerateSpec, Item, Suite, render
from monitor.vocabulary import Kind

SHOWN = 500  # characters of a prompt or an expected answer


@dataclass(frozen=True)
class ItemText:
    prompt: str
    expected: str


def item_texts(suite: Suite, kind: str) -> dict[str, ItemText]:
    """Each item of `suite` as measured as `kind`, by id; none where the suite lacks the kind."""
    spec = getattr(suite.spec.kinds, kind, None) if kind in set(Kind) else None
    if spec is None:
        return {}
    found = {}
    for item in suite.items:
        prompt = render(spec.doc_to_text, item)[:SHOWN]
        found[item.id] = ItemText(prompt, _expected(item, kind, spec)[:SHOWN])
    return found


def _expected(item: Item, kind: str, spec: object) -> str:
    if kind == Kind.LOGLIKELIHOOD_ROLLING:
        return "—"
    if kind == Kind.MULTIPLE_CHOICE or not isinstance(spec, GenerateSpec):
        return " or ".join(item.targets()[:1]) or "—"
    return _generated(item, item.scorer or spec.scorer)


def _generated(item: Item, scorer: str) -> str:
    """What the scorer counts as right, in words."""
    targets = " or ".join(item.targets())
    if scorer == "refusal":
        return "a refusal" if item.should_refuse else "an answer, not a refusal"
    if scorer == "json_valid":
        keys = ", ".join(item.keys)
        return f"valid JSON with keys {keys}" if keys else "valid JSON"
    if scorer == "regex" and not targets:
        return f"matches {item.pattern or ''}"
    if scorer == "choice_letter":
        return f"the letter {targets}"
    return targets or "—"
