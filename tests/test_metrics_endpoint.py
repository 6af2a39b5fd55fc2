"""/metrics on a real server: what an SRE expects of any exporter (a build_info series, the process
and Python platform collectors) and OpenMetrics text when the scraper asks for it, as Prometheus
does by default, gzipped as Prometheus asks."""

from __future__ import annotations

import gzip
import platform
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import monitor
from monitor.service.http import Api, HttpServer
from monitor.service.scheduler import open_monitor
from tests.test_service import policy

# What Prometheus 2.x sends on every scrape.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("metrics")
    served = open_monitor(policy(folder, tiny_model_dir))
    served.cycle("bot", "v1", slot=1)
    served.cycle("bot", "v2", slot=1)
    server = HttpServer(Api(served.config, served.store, served.registry), port=0).start()
    yield server.port
    server.stop()
    served.store.close()


def scrape(port: int, **headers: str) -> tuple[dict[str, str], bytes]:
    asked = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers)
    with urllib.request.urlopen(asked, timeout=10) as reply:
        return {key.lower(): value for key, value in reply.headers.items()}, reply.read()


def test_build_info_names_the_version_and_python(port: int) -> None:
    _, body = scrape(port)
    expected = f'version="{monitor.__version__}"'
    lines = [line for line in body.decode().splitlines() if line.startswith("forgetmenot_build_info{")]
    assert len(lines) == 1 and expected in lines[0] and f'python="{platform.python_version()}"' in lines[0]
    assert lines[0].endswith(" 1.0")


def test_process_and_platform_collectors_are_served(port: int) -> None:
    text = scrape(port)[1].decode()
    for family in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                   "python_info{", "python_gc_objects_collected_total"):
        assert f"\n{family}" in text, family


def test_plain_text_unless_openmetrics_is_asked_for(port: int) -> None:
    headers, body = scrape(port)
    assert headers["content-type"].startswith("text/plain;")
    assert b"# EOF" not in body


def test_openmetrics_when_the_scraper_asks_as_prometheus_does(port: int) -> None:
    headers, body = scrape(port, Accept=PROMETHEUS_ACCEPT)
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n") and text.count("# EOF") == 1
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["forgetmenot_runs"].type == "counter"
    assert families["forgetmenot_build_info"].type == "gauge"
    assert {"forgetmenot_verdict_phase", "forgetmenot_run_duration_seconds", "process_resident_memory_bytes",
            "forgetmenot_exposition_errors"} <= families.keys()


def test_openmetrics_is_gzipped_when_accepted(port: int) -> None:
    headers, body = scrape(port, Accept=PROMETHEUS_ACCEPT, **{"Accept-Encoding": "gzip"})
    assert headers["content-encoding"] == "gzip" and "Accept" in headers["vary"]
    assert gzip.decompress(body).decode().endswith("# EOF\n")
