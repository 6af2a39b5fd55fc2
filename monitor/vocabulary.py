"""The words forgetmenot decides in, each spelled once.

They are `StrEnum`s so a value is still the plain string the database, the metrics and the
policy file hold (`Phase.FAIL == "FAIL"`), while the code can only name values that exist.
Every layer may import this module; it imports nothing of forgetmenot's.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Kind(StrEnum):
    """How an item is scored, named as lm-evaluation-harness names its request types."""

    MULTIPLE_CHOICE = "multiple_choice"
    GENERATE_UNTIL = "generate_until"
    LOGLIKELIHOOD_ROLLING = "loglikelihood_rolling"

    @property
    def binary(self) -> bool:
        """Scored right or wrong per item (a paired test on discordant pairs applies)."""
        return self is not Kind.LOGLIKELIHOOD_ROLLING


# Safety depth's item results (`monitor.probing.depth`): kept in a run beside its kinds' results,
# but no kind a suite declares or a verdict judges. Scores are log-probabilities per token.
SAFETY_DEPTH = "safety_depth"


class Split(StrEnum):
    """Which items of a suite: probe items are scored, recovery items only ever train."""

    PROBE = "probe"
    RECOVERY = "recovery"
    ALL = "all"


class Phase(StrEnum):
    """A verdict's outcome, as Argo Rollouts and Kayenta users know it."""

    PASS = "PASS"
    MARGINAL = "MARGINAL"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    ERROR = "ERROR"

    @property
    def severity(self) -> int:
        """Order for "the worst of": an ERROR outranks no evidence but never a measured drop."""
        return _SEVERITY[self]

    @property
    def bad(self) -> bool:
        """A measured drop past (FAIL) or near (MARGINAL) the tolerance."""
        return self in (Phase.FAIL, Phase.MARGINAL)

    @classmethod
    def worst(cls, phases: Iterable[str], default: str = "INCONCLUSIVE") -> Phase:
        return max((cls(p) for p in phases), key=lambda p: p.severity, default=cls(default))


_SEVERITY = {Phase.PASS: 0, Phase.INCONCLUSIVE: 1, Phase.ERROR: 2, Phase.MARGINAL: 3, Phase.FAIL: 4}


class Diagnosis(StrEnum):
    """Why a capability dropped: the idea the whole monitor is built around."""

    KNOWLEDGE_LOSS = "knowledge_loss"  # both kinds dropped: the weights forgot (roll back)
    ALIGNMENT_LOSS = "alignment_loss"  # generation dropped, choice held: still known (retrain)
    UNDIAGNOSED = "undiagnosed"  # dropped, but measured one way only
    NONE = "none"


class Witnesses(StrEnum):
    """How many signals a diagnosis rests on, and whether they agree: multiple choice held or
    dropped on the same items, and generation re-elicited (`monitor.probing.reelicit`)."""

    AGREE = "agree"  # both measured, both say the same
    DISAGREE = "disagree"  # both measured, they differ: the reason says which way each went
    ONE = "one"  # one of them measured
    NONE = "none"  # neither: undiagnosed


def diagnosed(value: str | None) -> str | None:
    """A verdict's diagnosis as JSON gives it: null where none was found, so a client tests for
    null instead of knowing the word the database holds."""
    if value == Diagnosis.NONE:
        return None
    return value


class ActionKind(StrEnum):
    ALERT = "alert"
    ROLLBACK = "rollback"
    RETRAIN = "retrain"
    DEPLOY = "deploy"  # a release made outside the ladder, recorded like any move (the demo's)

    @property
    def moves(self) -> bool:
        """Changes what serves users; the guards count these."""
        return self in MOVES


MOVES = (ActionKind.ROLLBACK, ActionKind.RETRAIN)
LADDER = (ActionKind.ALERT, *MOVES)  # the steps a policy may list


class ActionStatus(StrEnum):
    PLANNED = "planned"
    DEPLOYING = "deploying"  # the intent recorded before the deployer acts; confirmed after
    PENDING_APPROVAL = "pending_approval"
    DRY_RUN = "dry_run"
    DONE = "done"
    REFUSED = "refused"  # a guard held it (cooldown, daily limit, no target)
    FAILED = "failed"  # the deployer or the retraining broke
    REJECTED = "rejected"  # retraining ran, but the gate kept the result out of service

    @property
    def succeeded(self) -> bool:
        return self in (ActionStatus.DONE, ActionStatus.DRY_RUN)

    @property
    def unfinished(self) -> bool:
        """A moment in an action's life (`planned`, `deploying`), not how it ended."""
        return self in (ActionStatus.PLANNED, ActionStatus.DEPLOYING)


class TriggeredBy(StrEnum):
    """What set an action off: a settled verdict, a person at the CLI, or a recovery round the
    gate rejected (the next round of the same recovery)."""

    VERDICT = "verdict"
    MANUAL = "manual"
    ROUND = "round"


class RunStatus(StrEnum):
    RUNNING = "running"
    COMPLETE = "complete"
    ERROR = "error"
    INTERRUPTED = "interrupted"


class ErrorKind(StrEnum):
    """Why a measurement broke: a bounded label (metrics carry it), never forgetting."""

    BACKEND = "backend"
    CONFIG = "config"
    LOAD = "load"
    DEPLOY = "deploy"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    SERVER = "server"  # a 5xx or 429: retried
    REJECTED = "rejected"  # any other 4xx: not retried
    AUTH = "auth"
    NOT_FOUND = "not_found"
    OOM = "oom"
    RUNTIME = "runtime"  # anything else the backend raised: a bug, or a failure nobody named yet
    INVALID_RESPONSE = "invalid_response"
    UNSUPPORTED = "unsupported"
    TOKENIZATION = "tokenization"
    WORKER_LOST = "worker_lost"  # a Ray worker or its node died mid-run, retries spent
    SCRIPTED = "scripted"  # the fake backend, told to fail
    # Scoring one answer broke (a pattern past its time bound, a scorer that raised): the answer
    # was never judged, so it is no wrong answer, and a broken scorer never looks like forgetting.
    SCORER = "scorer"


class Severity(StrEnum):
    """How bad a problem with a policy file is: an error stops it loading; a warning names what
    loads but cannot work as written (`forgetmenot validate --strict` fails on those too)."""

    ERROR = "error"
    WARNING = "warning"


CANDIDATE = "candidate"  # model_version.source of a candidate: "candidate:<who>" ("candidate-retired:...")


class Decision(StrEnum):
    """What the retention gate answers a rollout: go on only on PASS."""

    PASS = "pass"
    FAIL = "fail"  # a measured drop past the tolerance: abort the rollout
    INCONCLUSIVE = "inconclusive"  # not enough evidence, or near the line: a human decides
    ERROR = "error"  # the measurement broke: never a pass, never a forgetting
    PENDING = "pending"  # not judged yet: ask again

    @classmethod
    def of(cls, phase: str) -> Decision:
        return {Phase.PASS: cls.PASS, Phase.FAIL: cls.FAIL, Phase.ERROR: cls.ERROR}.get(
            Phase(phase), cls.INCONCLUSIVE)
