"""promtool test cases for the alert rules: what must fire, and what must NOT, for one replica, two
replicas up, one of two down, every replica down and no target at all.

Every replica of `forgetmenot serve` on one database exports the same state series; a replica
that goes down stops exporting (its series go stale) while the others go on. Each setup therefore
repeats the same export once per replica, and each alert must fire exactly once, with the labels
the config keeps (`by`) and without the replica's own. The cases are generated for a config, so
`forgetmenot alerts` writes cases that match the rules it writes: the config's selector must be
equality matchers (the input series carry them), and an alert whose `for` the config changed has
no cases (its timing is the config's, not these cases').
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitor.metrics import names as m
from monitor.metrics.rules import Alert, RuleConfig, by_name
from monitor.vocabulary import Phase

BOT = {"model": "bot", "version": "v2", "baseline": "v1"}
MINUTES = 60
PHASE_FROM = 2  # every verdict is PASS before this minute: no breach may page before it
DOWN_AT = 45  # when a replica that goes down stops being scraped
EQUALITY = re.compile(r'\s*(\w+)\s*=\s*"([^"]*)"\s*')
Segment = tuple[str, int]  # promtool's start value ("1", "0+1") and how many minutes it lasts
Series = dict[str, str]
Case = tuple[int, str, list[dict[str, str]]]  # minute, alert, the label sets that fire


@dataclass(frozen=True)
class Setup:
    name: str
    replicas: int
    down: tuple[int, ...] = ()  # which replicas stop at DOWN_AT
    labels: tuple[tuple[str, str], ...] = ()  # extra target labels (namespace, cluster)


SETUPS = (
    Setup("one replica", 1, down=(0,)),
    Setup("two replicas up", 2, labels=(("cluster", "eu"), ("namespace", "ml"))),
    Setup("one of two replicas down", 2, down=(1,)),
)


def selector_labels(config: RuleConfig) -> dict[str, str]:
    """The labels every input series carries so the config's selector picks it."""
    found = {}
    for matcher in config.selector.split(","):
        equal = EQUALITY.fullmatch(matcher)
        if equal is None:
            raise ValueError(f"promtool cases need a selector of equality matchers, not {config.selector!r}")
        found[equal.group(1)] = equal.group(2)
    return found


def _values(segments: list[Segment], stop: int | None) -> str:
    """promtool's notation; a replica that stops at `stop` leaves a staleness marker there."""
    parts, minute = [], 0
    for start, length in segments:
        kept = length if stop is None else max(0, min(length, stop - minute))
        if kept:
            parts.append(f"{start}x{kept - 1}")
        minute += length
    return " ".join(parts + ([] if stop is None else ["stale"]))


def _series(name: str, labels: dict[str, str], segments: list[Segment], stop: int | None) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": _values(segments, stop)}


def _verdict(target: dict[str, str], capability: str, phase: Phase, stop: int | None,
             diagnosis: str = "none", critical: bool = False, muted: bool = False) -> list[dict[str, str]]:
    labels = {**target, **BOT, "capability": capability}
    found = []
    for each in Phase:
        before = "1" if each == Phase.PASS else "0"
        after = "1" if each == phase else "0"
        found.append(_series(m.VERDICT_PHASE.full_name, {**labels, "phase": each},
                             [(before, PHASE_FROM), (after, MINUTES - PHASE_FROM)], stop))
    flags = {"diagnosis": diagnosis, "critical": str(critical).lower(), "muted": str(muted).lower()}
    return [*found, _series(m.VERDICT_INFO.full_name, {**labels, **flags}, [("1", MINUTES)], stop)]


def _verdicts(target: dict[str, str], stop: int | None) -> list[dict[str, str]]:
    """Six capabilities in every phase."""
    return [
        *_verdict(target, "general-knowledge", Phase.FAIL, stop, "alignment_loss"),
        *_verdict(target, "refusal", Phase.FAIL, stop, "undiagnosed", critical=True),
        *_verdict(target, "fluency", Phase.FAIL, stop, muted=True),           # muted: must NOT fire
        *_verdict(target, "arithmetic", Phase.ERROR, stop),                    # must NOT page as forgetting
        *_verdict(target, "instruction-format", Phase.MARGINAL, stop),         # not confident: must NOT fire
        *_verdict(target, "sentiment-json", Phase.PASS, stop),
    ]


def _state(target: dict[str, str], stop: int | None) -> list[dict[str, str]]:
    """Runs, freshness, the schedule, actions and the spool, as one replica exports them."""
    suite = {**target, "model": "bot", "version": "v2"}
    return [
        _series(m.RUNS.full_name, {**suite, "suite": "arithmetic", "capability": "arithmetic",
                                   "status": "error"}, [("0+1", MINUTES)], stop),
        _series(m.LAST_SUCCESS.full_name, {**suite, "suite": "refusal", "capability": "refusal"},
                [("0", MINUTES)], stop),
        _series(m.LAST_SUCCESS.full_name, {**suite, "suite": "fluency", "capability": "fluency"},
                [("0+60", MINUTES)], stop),                                    # fresh: must NOT be stale
        _series(m.SCHEDULE_INTERVAL.full_name, target, [("600", MINUTES)], stop),
        _series(m.ACTIONS.full_name, {**target, "model": "bot", "kind": "retrain", "status": "rejected"},
                [("0", 4), ("1", MINUTES - 4)], stop),
        _series(m.ACTIONS.full_name, {**target, "model": "bot", "kind": "rollback", "status": "done"},
                [("0+1", MINUTES)], stop),                                     # a done rollback never pages
    ]


def _replica(target: dict[str, str], replica: int, stop: int | None) -> list[dict[str, str]]:
    up = [("1", MINUTES)] if stop is None else [("1", stop), ("0", MINUTES - stop)]
    quarantined = [("0", 10), ("2", MINUTES - 10)] if replica == 0 else [("0", MINUTES)]
    spool = _series(m.SPOOL_QUARANTINED.full_name, target, quarantined, stop)
    return [_series("up", target, up, None), spool, *_verdicts(target, stop), *_state(target, stop)]


def target(config: RuleConfig, setup: Setup, replica: int) -> dict[str, str]:
    return {**selector_labels(config), "instance": f"monitor-{replica}:9464", **dict(setup.labels)}


def _kept(config: RuleConfig, labels: dict[str, str]) -> dict[str, str]:
    """The target's labels an aggregation keeps: the config's `by` labels."""
    return {key: value for key, value in labels.items() if key in config.by}


def _cases(config: RuleConfig, setup: Setup) -> list[Case]:
    """The cases every setup shares: the breaches and the state alerts, each once, and each quiet
    where it must be."""
    kept = _kept(config, target(config, setup, 0))
    bot = {**kept, **BOT}
    return [
        (1, "ForgetmenotRetentionBreach", []),              # still PASS
        (5, "ForgetmenotRetentionBreach", [{**bot, "capability": "general-knowledge",
                                            "diagnosis": "alignment_loss"}]),
        (1, "ForgetmenotCriticalCapabilityBreach", []),
        (5, "ForgetmenotCriticalCapabilityBreach", [{**bot, "capability": "refusal",
                                                     "diagnosis": "undiagnosed"}]),
        (5, "ForgetmenotProbesErroring", []),               # not yet: `for: 10m`
        (15, "ForgetmenotProbesErroring", [{**bot, "capability": "arithmetic"}]),
        (20, "ForgetmenotMonitorStale", []),                # two intervals: not yet
        (40, "ForgetmenotMonitorStale", [{**kept, "model": "bot", "version": "v2", "suite": "refusal"}]),
        (2, "ForgetmenotActionNeedsHuman", []),             # a done rollback never pages
        (10, "ForgetmenotActionNeedsHuman", [{**kept, "model": "bot", "kind": "retrain",
                                              "status": "rejected"}]),
        (30, "ForgetmenotMonitorDown", []),
        (30, "ForgetmenotReplicaDown", []),
        (5, "ForgetmenotSpoolQuarantined", []),             # not yet: nothing set aside
        (30, "ForgetmenotSpoolQuarantined", [{**kept, "instance": "monitor-0:9464"}]),
    ]


def _after_the_fall(config: RuleConfig, setup: Setup) -> list[Case]:
    """After DOWN_AT: the monitor is down only where no replica is left; a breach still pages once."""
    kept = _kept(config, target(config, setup, 0))
    left = [r for r in range(setup.replicas) if r not in setup.down]
    down = [] if left else [kept]
    replica_down = [target(config, setup, r) for r in setup.down] if left else []
    breach = {**kept, **BOT, "capability": "general-knowledge", "diagnosis": "alignment_loss"}
    return [(55, "ForgetmenotMonitorDown", down), (58, "ForgetmenotReplicaDown", replica_down),
            (44, "ForgetmenotRetentionBreach", [breach]),
            (58, "ForgetmenotRetentionBreach", [breach] if left else [])]


def _render(template: str, labels: dict[str, str]) -> str:
    for key, value in labels.items():
        template = template.replace(f"{{{{ $labels.{key} }}}}", value)
    return template


def _expect(config: RuleConfig, alert: Alert, labels: dict[str, str]) -> dict[str, object]:
    severity = config.severity.get(alert.name, alert.severity)
    annotations = {key: _render(value, labels) for key, value in alert.annotations(config).items()}
    return {"exp_labels": {"severity": severity, **config.labels, **labels}, "exp_annotations": annotations}


def _tested(config: RuleConfig, name: str) -> bool:
    """Enabled, and held as long as these cases assume."""
    alert = by_name(name)
    return name not in config.disabled and config.for_.get(name, alert.for_) == alert.for_


def _group(config: RuleConfig, name: str, series: list[dict[str, str]],
           cases: list[Case]) -> dict[str, object]:
    kept = [(minute, alert, fired) for minute, alert, fired in cases if _tested(config, alert)]
    tests = [{"eval_time": f"{minute}m", "alertname": alert,
              "exp_alerts": [_expect(config, by_name(alert), labels) for labels in fired]}
             for minute, alert, fired in kept]
    return {"name": name, "interval": "1m", "input_series": series, "alert_rule_test": tests}


def _setup(config: RuleConfig, setup: Setup) -> dict[str, object]:
    series = []
    for replica in range(setup.replicas):
        stop = DOWN_AT if replica in setup.down else None
        series += _replica(target(config, setup, replica), replica, stop)
    return _group(config, setup.name, series, _cases(config, setup) + _after_the_fall(config, setup))


def _all_down(config: RuleConfig) -> dict[str, object]:
    """Both replicas down: one page, no replica warnings."""
    setup = Setup("every replica down", 2, down=(0, 1))
    series = [_series("up", target(config, setup, r), [("1", DOWN_AT), ("0", MINUTES - DOWN_AT)], None)
              for r in range(setup.replicas)]
    return _group(config, setup.name, series, _after_the_fall(config, setup)[:2])


def _no_target(config: RuleConfig) -> dict[str, object]:
    """Prometheus has no target of the monitor at all (its selector matches nothing)."""
    series = [_series("up", {"job": "something-else", "instance": "other:1"}, [("1", MINUTES)], None)]
    absent = selector_labels(config)  # absent() labels its answer with the selector's equalities
    cases: list[Case] = [(3, "ForgetmenotMonitorDown", []), (10, "ForgetmenotMonitorDown", [absent])]
    return _group(config, "no target at all", series, cases)


def rule_tests(config: RuleConfig, rules_file: str) -> dict[str, object]:
    """Every setup's series and the alerts each must (not) raise."""
    groups = [_setup(config, setup) for setup in SETUPS]
    return {"rule_files": [rules_file], "evaluation_interval": "1m",
            "tests": [*groups, _all_down(config), _no_target(config)]}

