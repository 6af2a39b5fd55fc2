"""forgetmenot: a production monitor for deployed fine-tuned language models.

The public surface is what `__all__` lists; everything else is private implementation and may
change. Heavy dependencies (torch, transformers) are imported only when a backend is built.
"""

from monitor.errors import (
    BackendError,
    ConfigError,
    ForgetmenotError,
    MissingExtra,
    Problem,
    StoreError,
    SuiteError,
)
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

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "BackendError",
    "BackendInfo",
    "Config",
    "ConfigError",
    "FakeBackend",
    "ForgetmenotError",
    "GenerationRequest",
    "Item",
    "LoglikelihoodRequest",
    "MissingExtra",
    "Problem",
    "RollingResult",
    "Store",
    "StoreError",
    "Suite",
    "SuiteError",
    "VersionRef",
    "__version__",
    "load_config",
    "load_suite",
    "load_suites",
    "probe_suite",
    "probe_version",
]
