"""forgetmenot: a production monitor for deployed fine-tuned language models.

The public surface is what `__all__` lists; everything else is private implementation and may
change. Heavy dependencies (torch, transformers) are imported only when a backend is built.
"""

from monitor.backends.base import (
    Backend,
    BackendInfo,
    GenerationRequest,
    LoglikelihoodRequest,
    RollingResult,
)
from monitor.backends.fake import FakeBackend
from monitor.config import Config
from monitor.errors import (
    BackendError,
    ConfigError,
    ForgetmenotError,
    MissingExtra,
    Problem,
    StoreError,
    SuiteError,
)
from monitor.probing import VersionRef, probe_suite
from monitor.runner import probe_version
from monitor.store import Store
from monitor.suites import Item, Suite, load_suite
from monitor.validate import load_config, load_suites

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
