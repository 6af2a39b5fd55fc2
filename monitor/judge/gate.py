"""The retention gate: may this version take traffic? Asked by Argo Rollouts, Flagger or a CI
pipeline before a rollout goes on, answered from the verdicts the monitor keeps.

A version passes only when every counted suite has a verdict on its current content against the
baseline, and against the live version where live is neither, and all of them PASS. A FAIL stops
the rollout; MARGINAL and INCONCLUSIVE leave it to a human (Argo's Inconclusive pauses); an ERROR
is never a pass and never a forgetting; a suite not judged yet keeps the answer `pending`, which
`wait` waits out up to its timeout. Muted suites are shown and never decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from monitor.errors import JudgeError, Refused
from monitor.judge.model import verdict_rules
from monitor.policy.schema import Config
from monitor.policy.suites import Suite
from monitor.store import Store, Verdict, VerdictKind
from monitor.store.versions import with_made
from monitor.vocabulary import Decision, Kind, Phase, diagnosed

MAX_WAIT_S = 600.0


class UnknownVersion(JudgeError, Refused):
    """The gate was asked about a model or version the monitor does not know."""


@dataclass(frozen=True)
class Check:
    """One suite against one reference version: its newest verdict, or none yet."""

    suite: str
    capability: str
    baseline: str
    phase: str | None = None  # None: not judged yet
    diagnosis: str | None = None  # None: no loss diagnosed, or not judged yet
    drop: float | None = None
    low: float | None = None
    high: float | None = None
    max_drop: float | None = None
    muted: bool = False
    critical: bool = False
    verdict: int | None = None
    reason: str = "not judged yet"
    kind: str | None = None  # the kind that decided: the unit of `drop` and of `tolerance`
    tolerance: float | None = None  # the tolerance `kind` was held to (`max_drop` or `max_drop_nats`)

    @property
    def counted(self) -> bool:
        return not self.muted


@dataclass(frozen=True)
class Gate:
    model: str
    version: str
    decision: Decision
    reason: str
    checks: list[Check] = field(default_factory=list)
    waited_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.decision == Decision.PASS

    @property
    def phase(self) -> str | None:
        """The worst phase among the counted checks (None while any is pending)."""
        phases = [c.phase for c in self.checks if c.counted]
        if not phases or None in phases:
            return None
        return Phase.worst(p for p in phases if p is not None)

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "decision": self.decision.value,
                "passed": self.passed, "phase": self.phase, "reason": self.reason,
                "waited_s": round(self.waited_s, 3),
                "verdicts": [{**asdict(c), "url": f"/verdicts/{c.verdict}" if c.verdict else None}
                             for c in self.checks],
                "missing": [f"{c.suite} against {c.baseline}" for c in self.checks
                            if c.phase is None and c.counted]}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Gate:
        """The gate as a remote monitor answered it (`forgetmenot gate --url`)."""
        known = set(Check.__dataclass_fields__)
        checks = [Check(**{k: v for k, v in row.items() if k in known}) for row in body.get("verdicts", [])]
        return cls(str(body["model"]), str(body["version"]), Decision(body["decision"]),
                   str(body.get("reason", "")), checks, float(body.get("waited_s", 0.0)))


def references(config: Config, store: Store, model: str, version: str) -> list[str]:
    """What `version` is judged against: the baseline, and live where live is another version."""
    spec = config.models[model]
    live = store.live_version(config, model)
    return list(dict.fromkeys(v for v in (spec.baseline, live) if v != version))


def decide(store: Store, config: Config, suites: Sequence[Suite], model: str, version: str) -> Gate:
    """The gate's answer now, from the newest verdicts."""
    known = with_made(config, store).models.get(model)
    if known is None:
        raise UnknownVersion(f"no model '{model[:64]}' (models: {', '.join(config.models)})")
    if version not in known.versions:
        raise UnknownVersion(f"{model} has no version '{version[:64]}'; register it as a candidate first "
                             f"(POST /api/v1/models/{model}/candidates or forgetmenot candidate add)")
    if version == known.baseline:
        return Gate(model, version, Decision.PASS, "the baseline is what every version is judged against")
    checks = [_check(store, config, suite, model, version, ref)
              for ref in references(config, store, model, version) for suite in suites]
    decision, reason = _conclude(checks)
    return Gate(model, version, decision, reason, checks)


def wait(store: Store, config: Config, suites: Sequence[Suite], model: str, version: str,
         timeout_s: float, poll_s: float = 1.0, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> Gate:
    """`decide`, asked again every `poll_s` while the answer is pending, up to `timeout_s`."""
    began = clock()
    timeout_s = min(max(timeout_s, 0.0), MAX_WAIT_S)
    while True:
        gate = decide(store, config, suites, model, version)
        waited = clock() - began
        if settled(gate, waited, poll_s, timeout_s):
            return replace(gate, waited_s=waited)
        sleep(poll_s)


def settled(gate: Gate, waited: float, poll_s: float, timeout_s: float) -> bool:
    """A waiting client gets this answer now: it is decided, or there is no time for another poll."""
    return gate.decision != Decision.PENDING or waited + poll_s > timeout_s


def _check(store: Store, config: Config, suite: Suite, model: str, version: str, ref: str) -> Check:
    """The newest verdict on the suite's current content, judged under the current rules: one
    judged before the policy was changed (unmuted, tightened) waits for the next judging."""
    rules = config.policy.rules_for(suite.capability)
    found = store.verdicts(model=model, candidate=version, baseline=ref, suite=suite.name,
                           content_hash=suite.content_hash, newest=1)
    pending = Check(suite.name, suite.capability, ref, muted=rules.muted, critical=rules.critical)
    if not found:
        return pending
    if found[-1].rules and verdict_rules(found[-1], config) != rules:
        return replace(pending, reason=f"verdict {found[-1].id} was judged under other rules than the "
                                       "policy's now; waiting for the next")
    kinds = store.verdict_kinds([found[-1].id or 0]).get(found[-1].id or 0, [])
    return _from_verdict(found[-1], config, _deciding(kinds))


def _from_verdict(verdict: Verdict, config: Config, kind: str | None) -> Check:
    rules = verdict_rules(verdict, config)  # as judged
    phase, reason = verdict.phase, verdict.reason
    if phase not in set(Phase):  # written by a newer forgetmenot: never a pass, never a forgetting
        reason = f"verdict {verdict.id} has the phase '{phase[:40]}', unknown to this forgetmenot"
        phase = Phase.ERROR
    tolerance = rules.max_drop_nats if kind == Kind.LOGLIKELIHOOD_ROLLING else rules.max_drop
    return Check(verdict.suite, verdict.capability, verdict.baseline, phase, diagnosed(verdict.diagnosis),
                 verdict.drop, verdict.low, verdict.high, rules.max_drop, verdict.muted, verdict.critical,
                 verdict.id, reason, kind, tolerance)


def _deciding(kinds: Sequence[VerdictKind]) -> str | None:
    """The kind whose figures the verdict carries: the worst phase, the first of equals, as the
    judge chose it."""
    known = [k for k in kinds if k.phase in set(Phase)]
    worst = max(known, key=lambda k: Phase(k.phase).severity, default=None)
    return worst.kind if worst is not None else None


def _conclude(checks: Sequence[Check]) -> tuple[Decision, str]:
    counted = [c for c in checks if c.counted]
    waiting = [c for c in counted if c.phase is None]
    if waiting:
        names = ", ".join(f"{c.suite} against {c.baseline}" for c in waiting)
        return Decision.PENDING, f"waiting for verdicts: {names}"
    if not counted:
        return Decision.INCONCLUSIVE, "every suite is muted: nothing decides"
    worst = Phase.worst(c.phase for c in counted if c.phase is not None)
    decision = Decision.of(worst)
    if decision == Decision.PASS:
        return decision, f"all {len(counted)} counted verdicts PASS"
    named = [c for c in counted if c.phase == worst]
    said = "; ".join(f"{c.capability} against {c.baseline}: {c.phase}"
                     + (f" ({c.diagnosis})" if c.phase == Phase.FAIL else "") for c in named)
    return decision, said
