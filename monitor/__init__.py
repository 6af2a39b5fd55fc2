"""forgetmenot: a production monitor for deployed fine-tuned language models.

The public surface is what `__all__` lists; everything else is private implementation and may
change. Names are imported on first use (PEP 562), so `import monitor` costs nothing and a
command that never judges never loads scipy; torch and transformers load only when an
in-process backend is built.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.errors import (
        BackendError,
        ConfigError,
        ForgetmenotError,
        MissingExtra,
        Problem,
        StoreError,
        SuiteError,
    )
    from monitor.judge import Judgement, ModelJudgement, judge_model
    from monitor.policy.loading import load_config, load_suites
    from monitor.policy.schema import Config
    from monitor.policy.suites import Item, Suite, load_suite
    from monitor.probing.backends.base import (
        Backend,
        BackendInfo,
        GenerationRequest,
        LoglikelihoodRequest,
        RollingResult,
    )
    from monitor.probing.backends.fake import FakeBackend
    from monitor.probing.run import VersionRef, probe_suite
    from monitor.probing.version import probe_version
    from monitor.store import Store
    from monitor.vocabulary import Phase

__version__ = "0.1.0"

_WHERE = {
    "monitor.errors": ("BackendError", "ConfigError", "ForgetmenotError", "MissingExtra", "Problem",
                       "StoreError", "SuiteError"),
    "monitor.judge": ("Judgement", "ModelJudgement", "judge_model"),
    "monitor.policy.loading": ("load_config", "load_suites"),
    "monitor.policy.schema": ("Config",),
    "monitor.policy.suites": ("Item", "Suite", "load_suite"),
    "monitor.probing.backends.base": ("Backend", "BackendInfo", "GenerationRequest", "LoglikelihoodRequest",
                                      "RollingResult"),
    "monitor.probing.backends.fake": ("FakeBackend",),
    "monitor.probing.run": ("VersionRef", "probe_suite"),
    "monitor.probing.version": ("probe_version",),
    "monitor.store": ("Store",),
    "monitor.vocabulary": ("Phase",),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "Backend", "BackendError", "BackendInfo", "Config", "ConfigError", "FakeBackend", "ForgetmenotError",
    "GenerationRequest", "Item", "Judgement", "LoglikelihoodRequest", "MissingExtra", "ModelJudgement",
    "Phase", "Problem", "RollingResult", "Store", "StoreError", "Suite", "SuiteError", "VersionRef",
    "__version__", "judge_model", "load_config", "load_suite", "load_suites", "probe_suite",
    "probe_version",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'monitor' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
