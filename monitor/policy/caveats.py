"""What a policy that loads still cannot do, as warnings naming the file, line and key to change.

A tolerance that no kind of its capability's suites uses is never applied. A suite with fewer
probe items per kind than `min_items` can only ever be INCONCLUSIVE: its capability is
unmonitored, and nobody would be told (worst when it is critical). A ladder that retrains a
capability whose suite has no recovery items has nothing to train on. None of these stops the
monitor: `forgetmenot validate` prints them and `--strict` fails on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from monitor.errors import Problem
from monitor.policy import positions as yamlpos
from monitor.policy.schema import Config, Rules
from monitor.policy.suites import Suite
from monitor.vocabulary import Kind, Severity, Split

ACCURACY = "multiple_choice and generate_until"
FLUENCY = "loglikelihood_rolling"
# Each tolerance, what it applies to, and what does the same for the other unit.
TOLERANCES = {"max_drop": (True, f"max_drop_nats is the tolerance of {FLUENCY}"),
              "min_score": (True, f"max_drop_nats is the tolerance of {FLUENCY}"),
              "max_drop_nats": (False, f"max_drop is the tolerance of {ACCURACY}")}


def warnings(config: Config, suites: Sequence[Suite], located: yamlpos.Located) -> list[Problem]:
    found = _tolerance_problems(config, suites, located)
    for index, suite in _indexed(config, suites):
        rules = config.policy.rules_for(suite.capability)
        found += _item_problems(suite, rules, ("suites", index), located)
        found += _recovery_problems(suite, rules, ("suites", index), located)
    return [replace(problem, severity=Severity.WARNING) for problem in found]


def _indexed(config: Config, suites: Sequence[Suite]) -> list[tuple[int, Suite]]:
    """Each loaded suite with its place in the policy's `suites` list."""
    places = {config.resolve(entry): index for index, entry in enumerate(config.suites)}
    return [(places[suite.directory], suite) for suite in suites if suite.directory in places]


def _tolerance_problems(config: Config, suites: Sequence[Suite], located: yamlpos.Located) -> list[Problem]:
    found = []
    for name, own in config.policy.capabilities.items():
        measuring = [s for s in suites if s.capability == name]
        kinds = _kinds(measuring)
        written = [key for key in TOLERANCES if getattr(own, key) is not None]
        for key in written:
            if kinds and not _applies(key, kinds):
                found.append(located.problem(("policy", "capabilities", name, key),
                                             _unused(key, _named(measuring), kinds)))
    return found


def _kinds(suites: Sequence[Suite]) -> list[Kind]:
    measured = {kind for suite in suites for kind in suite.kinds}
    return [kind for kind in Kind if kind in measured]


def _applies(key: str, kinds: Sequence[Kind]) -> bool:
    accuracy, _ = TOLERANCES[key]
    return any(kind.binary == accuracy for kind in kinds)


def _named(suites: Sequence[Suite]) -> str:
    quoted = ", ".join(f"'{s.name}'" for s in suites)
    return f"suite {quoted} measures" if len(suites) == 1 else f"suites {quoted} measure"


def _unused(key: str, named: str, kinds: Sequence[Kind]) -> str:
    accuracy, instead = TOLERANCES[key]
    applies = ACCURACY if accuracy else FLUENCY
    measured = " and ".join(kinds)
    return f"applies to {applies}, and {named} only {measured}: it is never used ({instead})"


def _item_problems(suite: Suite, rules: Rules, loc: yamlpos.Path_, located: yamlpos.Located) -> list[Problem]:
    """A suite too small for `min_items` can never PASS or FAIL: its capability is unmonitored."""
    probe = len(suite.select(Split.PROBE))
    if probe >= rules.min_items:
        return []
    few = f"suite '{suite.name}' has {probe} probe items per kind, under min_items {rules.min_items}"
    found = [located.problem(loc, f"{few}: capability '{suite.capability}' can never PASS or FAIL, only "
                                  "INCONCLUSIVE (unmonitored); add items or lower min_items")]
    if rules.critical:
        critical = ("policy", "capabilities", suite.capability, "critical")
        found.append(located.problem(critical, f"'{suite.capability}' is critical but unmeasurable: {few}"))
    return found


def _recovery_problems(suite: Suite, rules: Rules, loc: yamlpos.Path_,
                       located: yamlpos.Located) -> list[Problem]:
    """Retraining learns only from recovery items: a suite with none gives it nothing."""
    retrains = [loss for loss, ladder in (("alignment", rules.on_alignment_loss),
                                          ("knowledge", rules.on_knowledge_loss)) if "retrain" in ladder]
    if rules.muted or not retrains or suite.select(Split.RECOVERY):
        return []
    fraction = suite.spec.split.recovery_fraction
    losses = " and ".join(retrains)
    return [located.problem(loc, f"suite '{suite.name}' has no recovery items (split.recovery_fraction "
                                 f"{fraction}), and capability '{suite.capability}' retrains on {losses} "
                                 "loss: retraining would have nothing to learn from")]
