"""Probe suites: a versioned, hashed set of items for one capability.

A suite is a folder: `suite.yaml` (what it measures and how it is asked) and `items.jsonl` (one
item a line). Items are split deterministically into a *probe* split, which is scored, and a
*recovery* split, which only recovery retraining may see. The split hashes each item id with the
suite's seed, so adding an item never moves the others between splits.

The content hash covers the parsed spec and every item, so two scores are only ever compared
when they were measured on the same content.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from string import Formatter
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from monitor.errors import ConfigError, Problem, SuiteError
from monitor.policy import bounds, scorers
from monitor.policy import positions as yamlpos
from monitor.policy.schema import Strict
from monitor.vocabulary import Kind, Split

KINDS: tuple[Kind, ...] = tuple(Kind)


def _plain(template: str) -> str:
    problem = bounds.template_problem(template)
    if problem:
        raise ValueError(problem)
    return template


Template = Annotated[str, AfterValidator(_plain)]  # `{field}` substitution and nothing else


class MultipleChoiceSpec(Strict):
    doc_to_text: Template = "Question: {question}\nAnswer:"
    target_delimiter: str = " "


class ReelicitSpec(Strict):
    """How a suite whose generation dropped is asked again, to see whether the behaviour comes
    back when only re-activated (the diagnosis's second witness, `monitor.probing.reelicit`): a
    few of the baseline's correct answers on recovery items shown as examples (`shots`), and/or the
    instruction the fine-tune overrode (`system_prompt`, in place of the suite's)."""

    system_prompt: Annotated[str, Field(min_length=1)] | None = None
    shots: Annotated[int, Field(ge=0, le=8)] = 0

    @model_validator(mode="after")
    def _asks_something(self) -> ReelicitSpec:
        if self.system_prompt is None and self.shots == 0:
            raise ValueError("re-elicitation needs a system_prompt, shots (1-8), or both")
        return self


DEFAULT_REELICIT = ReelicitSpec(shots=3)  # a suite that declares none, where it has examples to show


class GenerateSpec(Strict):
    doc_to_text: Template = "{question}"
    scorer: scorers.ScorerName = "contains"
    max_new_tokens: Annotated[int, Field(gt=0, le=4096)] = 32
    until: tuple[str, ...] = ()
    system_prompt: str | None = None
    reelicit: ReelicitSpec | None = None


class RollingSpec(Strict):
    doc_to_text: Template = "{text}"


class KindsSpec(Strict):
    multiple_choice: MultipleChoiceSpec | None = None
    generate_until: GenerateSpec | None = None
    loglikelihood_rolling: RollingSpec | None = None

    def declared(self) -> list[Kind]:
        return [k for k in KINDS if getattr(self, k) is not None]


class SplitSpec(Strict):
    recovery_fraction: Annotated[float, Field(ge=0.0, le=0.9)] = 0.15
    seed: int = 0
    # Items tagged `{group}-…` are split by that tag instead of their id, so the two halves of a
    # pair kept in two suites (a harmful request, its benign look-alike) land in the same split.
    group: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = None


class SuiteSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    version: Annotated[int, Field(ge=1)]
    capability: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")]
    description: str = ""
    items: str = "items.jsonl"
    split: SplitSpec = SplitSpec()
    kinds: KindsSpec
    # A suite whose recovery examples must travel with this one's: recovery on refusal alone
    # taught SmolLM2 to refuse everything, so harmful requests train with their look-alikes.
    partner: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None = None


class Item(BaseModel):
    """One probe item. Extra fields are allowed: templates may use them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: Annotated[str, Field(min_length=1)]
    question: str | None = None
    choices: list[str] | None = None
    gold: int | None = None
    target: str | list[str] | None = None
    scorer: scorers.ScorerName | None = None
    pattern: str | None = None
    keys: list[str] = []
    should_refuse: bool | None = None
    text: str | None = None
    tags: list[str] = []

    def targets(self) -> list[str]:
        if self.target is not None:
            return [self.target] if isinstance(self.target, str) else list(self.target)
        if self.choices is not None and self.gold is not None and 0 <= self.gold < len(self.choices):
            return [self.choices[self.gold]]
        return []

    def fields(self) -> dict[str, Any]:
        return self.model_dump()

    def group_tag(self, group: str | None) -> str | None:
        """The item's `GROUP-…` tag (`pair-07` for group `pair`): what ties it to its partners."""
        if group is None:
            return None
        return next((tag for tag in self.tags if tag.startswith(f"{group}-")), None)


@dataclass(frozen=True)
class Suite:
    spec: SuiteSpec
    directory: Path
    items: tuple[Item, ...]
    content_hash: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def capability(self) -> str:
        return self.spec.capability

    @property
    def kinds(self) -> list[Kind]:
        return self.spec.kinds.declared()

    def split_of(self, item: Item) -> Split:
        key = self._split_key(item)
        digest = hashlib.sha256(f"{self.spec.split.seed}:{key}".encode()).digest()
        share = int.from_bytes(digest[:8], "big") / 2**64
        return Split.RECOVERY if share < self.spec.split.recovery_fraction else Split.PROBE

    def _split_key(self, item: Item) -> str:
        """What decides an item's split: its id, or the tag naming its group where the suite
        splits by group (an item without such a tag falls back to its id)."""
        group = self.spec.split.group
        tag = item.group_tag(group)
        if tag is None:
            return item.id
        return f"{group}:{tag}"

    def only(self, kinds: Sequence[Kind]) -> Suite:
        """The same suite measured only as `kinds`: same items and prompts, so the same hash."""
        unknown = [k for k in kinds if k not in self.kinds]
        if unknown:
            raise SuiteError([Problem(str(self.directory / "suite.yaml"), None, "kinds",
                                      f"suite '{self.name}' does not declare {', '.join(unknown)}")])
        kept = {k: getattr(self.spec.kinds, k) if k in kinds else None for k in KINDS}
        spec = self.spec.model_copy(update={"kinds": KindsSpec(**kept)})
        return replace(self, spec=spec)

    def select(self, split: Split = Split.PROBE) -> list[Item]:
        return [i for i in self.items if split == Split.ALL or self.split_of(i) == split]


def render(template: str, item: Item) -> str:
    return template.format_map(item.fields())


def generation_correct(item: Item, spec: GenerateSpec, output: str) -> bool:
    """Score one generated answer with the item's scorer (or the suite's)."""
    name = item.scorer or spec.scorer
    if name == "regex":
        return scorers.regex(output, item.pattern or "")
    if name == "json_valid":
        return scorers.json_valid(output, item.keys)
    if name == "refusal":
        return scorers.refusal(output, bool(item.should_refuse))
    if name == "choice_letter":
        return scorers.choice_letter(output, item.targets()[0])
    if name == "exact":
        return scorers.exact(output, item.targets())
    return scorers.contains(output, item.targets())


def load_suite(directory: Path | str) -> Suite:
    """Load and check a suite; every problem found is reported at once, with file and line."""
    directory = Path(directory)
    spec_file = directory / "suite.yaml"
    if not spec_file.is_file():
        raise SuiteError([Problem(str(directory), None, "", "not a probe suite: no suite.yaml")])
    spec = _load_spec(spec_file)
    items_file = directory / spec.items
    if not bounds.inside(directory, items_file):
        raise SuiteError([Problem(str(spec_file), None, "items", f"'{spec.items}' leads outside the suite "
                                  f"folder {directory}; items must be a file inside it")])
    items, problems = _load_items(items_file, spec)
    if spec.name != directory.name:
        problems.insert(0, Problem(str(spec_file), None, "name", f"'{spec.name}' differs from "
                                   f"the folder name '{directory.name}'"))
    if problems:
        raise SuiteError(problems)
    return Suite(spec, directory, tuple(items), _content_hash(spec, items))


def _load_spec(spec_file: Path) -> SuiteSpec:
    try:
        located = yamlpos.load(spec_file)
    except ConfigError as exc:
        raise SuiteError(exc.problems) from exc
    try:
        spec = SuiteSpec.model_validate(located.data)
    except ValidationError as exc:
        raise SuiteError([located.problem(tuple(e["loc"]), e["msg"].removeprefix("Value error, "))
                          for e in exc.errors()]) from exc
    if not spec.kinds.declared():
        raise SuiteError([located.problem(("kinds",), f"declare at least one of {', '.join(KINDS)}")])
    return spec


def _load_items(path: Path, spec: SuiteSpec) -> tuple[list[Item], list[Problem]]:
    if not path.is_file():
        return [], [Problem(str(path), None, "", "items file not found")]
    big = bounds.too_big(path, bounds.MAX_ITEMS_BYTES)
    if big:
        return [], [Problem(str(path), None, "", big)]
    items: list[Item] = []
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        raw, undecoded = _decoded(line)
        if undecoded:
            problems.append(Problem(str(path), number, "", undecoded))
            continue
        if not raw.strip():
            continue
        if len(raw) > bounds.MAX_ITEM_LINE_BYTES:
            problems.append(Problem(str(path), number, "", f"the line is {len(raw):,} characters; an item "
                                    f"may have at most {bounds.MAX_ITEM_LINE_BYTES:,}"))
            continue
        item, found = _parse_item(raw, spec)
        problems += [Problem(str(path), number, key, msg) for key, msg in found]
        if item is None:
            continue
        if item.id in first_line:
            problems.append(Problem(str(path), number, "id",
                                    f"duplicate item id '{item.id}' (first on line {first_line[item.id]})"))
            continue
        first_line[item.id] = number
        items.append(item)
    if not items and not problems:
        problems.append(Problem(str(path), None, "", "no items"))
    return items, problems


def _decoded(line: bytes) -> tuple[str, str | None]:
    """One line of an items file as text, or why it is not text. Decoded line by line, so one bad
    line is reported with its number and the others are still checked."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return "", bounds.not_utf8(exc)[1]


_ITEM_TOO_DEEP = (f"lists and objects nested more than {bounds.MAX_DEPTH} deep; an item needs a few "
                  "levels at most, so flatten it")


def _parse_item(raw: str, spec: SuiteSpec) -> tuple[Item | None, list[tuple[str, str]]]:
    if bounds.json_too_deep(raw):  # checked before json.loads, pydantic and the hash recurse
        return None, [("", _ITEM_TOO_DEEP)]
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return None, [("", f"not valid JSON: {exc}")]
    if not isinstance(data, dict):
        return None, [("", "an item must be a JSON object")]
    try:
        item = Item.model_validate(data)
    except ValidationError as exc:
        return None, [(yamlpos.dotted(tuple(e["loc"])), e["msg"]) for e in exc.errors()]
    return item, _check_item(item, spec)


def _check_item(item: Item, spec: SuiteSpec) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    kinds = spec.kinds
    if kinds.multiple_choice:
        found += _check_template(kinds.multiple_choice.doc_to_text, item, Kind.MULTIPLE_CHOICE)
        found += _check_choices(item)
    if kinds.generate_until:
        found += _check_template(kinds.generate_until.doc_to_text, item, Kind.GENERATE_UNTIL)
        found += _check_generation(item, kinds.generate_until)
    if kinds.loglikelihood_rolling:
        found += _check_template(kinds.loglikelihood_rolling.doc_to_text, item, Kind.LOGLIKELIHOOD_ROLLING)
    return found


def _check_template(template: str, item: Item, kind: str) -> list[tuple[str, str]]:
    fields = item.fields()
    missing = [f for _, f, _, _ in Formatter().parse(template) if f and fields.get(f) is None]
    return [(f, f"missing field '{f}' used by the {kind} prompt") for f in missing]


def _check_choices(item: Item) -> list[tuple[str, str]]:
    if not item.choices or len(item.choices) < 2:
        return [("choices", "multiple_choice needs at least two choices")]
    if item.gold is None:
        return [("gold", "multiple_choice needs 'gold', the index of the right choice")]
    if not 0 <= item.gold < len(item.choices):
        return [("gold", f"index {item.gold} is out of range for {len(item.choices)} choices")]
    if len(set(item.choices)) != len(item.choices):
        return [("choices", "duplicate choices")]
    return []


def _check_generation(item: Item, spec: GenerateSpec) -> list[tuple[str, str]]:
    name = item.scorer or spec.scorer
    if name == "regex":
        return _check_pattern(item.pattern)
    if name == "refusal" and item.should_refuse is None:
        return [("should_refuse", "the refusal scorer needs should_refuse: true or false")]
    if name == "choice_letter" and not re.fullmatch(r"\s*[A-J]\s*", (item.targets() or [""])[0]):
        return [("target", "the choice_letter scorer needs a target letter A-J")]
    if name in ("exact", "contains") and not item.targets():
        return [("target", f"the {name} scorer needs 'target' (or 'choices' with 'gold')")]
    return []


def _check_pattern(pattern: str | None) -> list[tuple[str, str]]:
    if not pattern:
        return [("pattern", "the regex scorer needs 'pattern'")]
    problem = scorers.pattern_problem(pattern)
    return [("pattern", problem)] if problem else []


# Spec fields added after suites were first stored: left out of the hash while unset, so a suite
# that does not use them keeps the hash its stored runs were measured under.
LATER_FIELDS: tuple[tuple[str, ...], ...] = (("partner",), ("split", "group"))
# How a failing suite is asked again changes no plain prompt, so tuning it keeps the suite's
# stored runs; the re-elicited suite's own hash covers it (`monitor.probing.reelicit.derive`).
UNHASHED: tuple[str, ...] = ("kinds", "generate_until", "reelicit")


def _hashed(spec: SuiteSpec) -> dict[str, Any]:
    data = spec.model_dump()
    for path in LATER_FIELDS:
        holder = _holder(data, path[:-1])
        if isinstance(holder, dict) and holder.get(path[-1], 0) is None:
            del holder[path[-1]]
    generate = _holder(data, UNHASHED[:-1])
    if isinstance(generate, dict):
        generate.pop(UNHASHED[-1], None)
    return data


def _holder(data: dict[str, Any], path: Sequence[str]) -> Any:
    holder: Any = data
    for key in path:
        holder = holder.get(key) if isinstance(holder, dict) else None
    return holder


def content_hash(spec: SuiteSpec, items: Sequence[Item]) -> str:
    """The hash every score of a suite is stored under: its parsed spec and every item."""
    return _content_hash(spec, items)


def _content_hash(spec: SuiteSpec, items: Sequence[Item]) -> str:
    digest = hashlib.sha256(json.dumps(_hashed(spec), sort_keys=True).encode())
    for item in items:
        digest.update(json.dumps(item.model_dump(), sort_keys=True).encode())
    return digest.hexdigest()
