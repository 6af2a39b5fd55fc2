"""The exception tree, drawn once so callers know what to catch.

    ForgetmenotError
    ├── ConfigError         a policy file is wrong; carries every Problem found, not just the first
    ├── SuiteError          a probe suite is wrong; carries every Problem found
    ├── BackendError        the *measurement* broke (model will not load, endpoint down, OOM).
    │                       Recorded as an error, never as forgetting.
    ├── StoreError          the database is unreachable or refused a write
    └── MissingExtra        an optional dependency is not installed (also an ImportError)

Bad input is data about a file: each Problem names the file, the line and the key, so the
person fixing it never has to guess where to look.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one place in one file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ForgetmenotError(Exception):
    """Base of every error forgetmenot raises on purpose."""


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

    def __init__(self, message: str, kind: str = "backend") -> None:
        self.kind = kind
        super().__init__(message)


class StoreError(ForgetmenotError):
    """The store could not read or write."""


class MissingExtra(ForgetmenotError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; install it with: pip install 'forgetmenot[{extra}]'"
        )
