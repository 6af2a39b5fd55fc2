"""What every exporter serves about itself: `forgetmenot_build_info` and prometheus_client's process,
platform (Python) and garbage-collector collectors. Each replica serves its own, so these, unlike
the state read from the database, are per replica (the dashboards and rules never `max` them)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import CollectorRegistry, Gauge, GCCollector, PlatformCollector, ProcessCollector

from monitor.metrics import names as m


def _installed(package: str) -> str:
    """The installed distribution's version, or "" where it is not installed (torch on the slim image)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return ""


def register_process_metrics(registry: CollectorRegistry) -> None:
    """Build info and the process, platform and GC collectors, into `registry`."""
    from monitor import __version__  # the package's own: imported here, after the package

    build = Gauge(m.BUILD_INFO.full_name, m.BUILD_INFO.help, list(m.BUILD_INFO.labels), registry=registry)
    build.labels(__version__, platform.python_version(), _installed("torch")).set(1)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)

