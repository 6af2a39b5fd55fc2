"""Every exception forgetmenot raises on purpose, drawn once so callers know what to catch.

    ForgetmenotError
    ├── ConfigError         a policy file is wrong; carries every Problem found, not just the first
    ├── SuiteError          a probe suite is wrong; carries every Problem found
    ├── BackendError        the *measurement* broke (model will not load, endpoint down, OOM).
    │   │                   Recorded as an error, never as forgetting; `kind` is an ErrorKind.
    │   └── TransientError  worth another try: the server may answer next time
    ├── NotSupported        a server ignored a request option; the caller falls back (internal)
    ├── StoreError          the database is unreachable or refused a write
    │   └── StoreRefused    it refused what was written (a value it cannot hold, a broken
    │                       constraint): unlike an outage, trying again will not help
    ├── JudgeError          the comparison asked for cannot be made (other content, no runs yet)
    ├── ActionError         an action could not be carried out; its audit row says so
    │   ├── DeployError     the deployer could not make the version live
    │   ├── AlertError      Alertmanager did not take the alert
    │   ├── RetrainRefused  retraining cannot run as configured; nothing was built
    │   └── RetrainFailed   training itself broke (out of memory, bad weights); nothing registered
    ├── Stopping            the monitor was asked to stop mid-run: the run is marked interrupted
    ├── PublishError        Grafana refused the dashboards or could not be reached
    └── MissingExtra        an optional dependency is not installed (also an ImportError)

Every message is redacted (`monitor.redaction`) when the error is made.

Bad input is data about a file: each Problem names the file, the line and the key, so the
person fixing it never has to guess where to look.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from monitor.redaction import redact
from monitor.vocabulary import ErrorKind, Severity


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one place in one file: an error, or a warning about what loads but
    cannot work as written."""

    file: str
    line: int | None
    key: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ForgetmenotError(Exception):
    """Base of every error forgetmenot raises on purpose. Its message is redacted: a credential
    written into a URL never reaches a log, an audit row or an alert through an error."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(a) if isinstance(a, str) else a for a in args))


class _ProblemsError(ForgetmenotError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigError(_ProblemsError):
    """The policy file cannot be used as it is."""


class SuiteError(_ProblemsError):
    """A probe suite cannot be used as it is."""


class BackendError(ForgetmenotError):
    """The measurement broke. `kind` is a short, bounded label (metrics use it)."""

    def __init__(self, message: str, kind: str = ErrorKind.BACKEND) -> None:
        self.kind = ErrorKind(kind)
        super().__init__(message)


class TransientError(BackendError):
    """Worth another try: the server may answer next time."""


class NotSupported(ForgetmenotError):
    """The server ignored or refused a request option (`logprob_token_ids`); the caller falls back."""


class StoreError(ForgetmenotError):
    """The store could not read or write."""


class StoreRefused(StoreError):
    """The database refused the data itself: the same write fails the same way however often it
    is tried, so what holds it (a spool record) is set aside rather than retried."""


class Refused(ForgetmenotError):
    """What was asked names something that is not there or cannot be kept as given: the asker's
    input is wrong (the CLI exits 2), not the measurement (3)."""


class CandidateError(Refused):
    """A candidate cannot be registered or retired as asked: `status` is the HTTP answer (409 when
    only its name is taken, 404 when there is no such candidate)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

    @property
    def conflict(self) -> bool:
        return self.status == 409


class JudgeError(ForgetmenotError):
    """The comparison asked for cannot be made (different content, no runs)."""


class ActionError(ForgetmenotError):
    """An action could not be carried out; the audit row records why."""


class DeployError(ActionError):
    """The deployer could not make the version live; the message says what state it left."""


class AlertError(ActionError):
    """Alertmanager did not take the alert."""


class RetrainRefused(ActionError):
    """Retraining cannot run as configured; nothing was built."""


class RetrainFailed(ActionError):
    """Training itself broke (out of memory, bad weights); nothing was registered."""


class Stopping(ForgetmenotError):
    """Raised inside a run when the monitor is asked to stop: the run is marked interrupted."""


class PublishError(ForgetmenotError):
    """Grafana refused a dashboard or could not be reached; the message names Grafana's address
    without credentials, and never the token."""


# Set by the Containerfile to the image's flavor: inside the image nothing can be pip-installed (a
# read-only root, often no index), so advice names the image to build instead.
IMAGE_FLAVOR_ENV = "FORGETMENOT_IMAGE_FLAVOR"


def image_flavor() -> str | None:
    """The flavor of the forgetmenot container image this runs in, or None outside one."""
    return os.environ.get(IMAGE_FLAVOR_ENV) or None


def image_build_hint(extra: str) -> str:
    """How to get an image that has `extra`: the model flavor is its own build, others are EXTRAS."""
    argument = "FLAVOR=model" if extra == "model" else f"EXTRAS={extra}"
    return f"an image built with --build-arg {argument} has it (docs/container.md)"


class MissingExtra(ForgetmenotError, ImportError):
    """An optional dependency is missing; the message names the extra to install, or inside the
    container image, the image to build."""

    def __init__(self, module: str, extra: str) -> None:
        flavor = image_flavor()
        if flavor is None:
            message = f"{module} is not installed; install it with: pip install 'forgetmenot[{extra}]'"
        else:
            message = (f"{module} is not in the forgetmenot {flavor} image, which leaves the "
                       f"'{extra}' extra out; {image_build_hint(extra)}")
        super().__init__(message)
