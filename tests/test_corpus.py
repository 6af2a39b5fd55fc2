"""The bad-input corpus (tests/corpus): malformed policies, suites, server answers and API requests,
each with the exact error it must get (tests/corpus/expected.yaml and the two lists), never a
traceback, and never a change to what is stored."""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from monitor.cli.app import app
from monitor.errors import BackendError, ConfigError, SuiteError
from monitor.policy.loading import load_config
from monitor.policy.suites import load_suite
from monitor.service.access import Access
from monitor.service.http import Api, HttpServer
from monitor.store import Action, Store, Verdict
from tests.conftest import PROBES
from tests.test_endpoint import ASK, Scripted, backend, scripted  # noqa: F401 (a fixture)

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text())
POLICIES = sorted(p.name for p in (CORPUS / "policies").glob("*.yaml"))
SUITES = sorted(p.name for p in (CORPUS / "suites").iterdir() if p.is_dir())
RESPONSES = yaml.safe_load((CORPUS / "responses.yaml").read_text())
REQUESTS = yaml.safe_load((CORPUS / "requests.yaml").read_text())


def test_the_corpus_holds_at_least_forty_inputs_each_with_its_error() -> None:
    assert len(POLICIES) + len(SUITES) + len(RESPONSES) + len(REQUESTS) >= 40
    assert sorted(EXPECTED["policies"]) == POLICIES and sorted(EXPECTED["suites"]) == SUITES


@pytest.mark.parametrize("name", POLICIES)
def test_a_malformed_policy_gets_its_exact_error(tmp_path: Path, name: str) -> None:
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    (tmp_path / "w").mkdir()
    path = tmp_path / "forgetmenot.yaml"
    shutil.copy(CORPUS / "policies" / name, path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    got = [str(p).replace(str(path), "{file}").replace(str(tmp_path), "{base}")
           for p in caught.value.problems]
    assert got == EXPECTED["policies"][name]
    result = CliRunner().invoke(app, ["validate", "-c", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output


@pytest.mark.parametrize("name", SUITES)
def test_a_malformed_suite_gets_its_exact_error(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "a" / "b" / name  # deep enough for ../../../../etc/passwd to mean /etc/passwd
    shutil.copytree(CORPUS / "suites" / name, folder)
    with pytest.raises(SuiteError) as caught:
        load_suite(folder)
    assert [str(p).replace(str(folder), "{dir}") for p in caught.value.problems] == EXPECTED["suites"][name]


@pytest.mark.parametrize("answer", RESPONSES, ids=[r["name"] for r in RESPONSES])
def test_a_bad_server_answer_is_a_measurement_error(scripted: Callable[..., Scripted],  # noqa: F811
                                                    answer: dict[str, Any]) -> None:
    body: Any = answer.get("json")
    if body is None:
        body = ("[" * 100_000).encode() if answer["body"] == "DEEP" else answer["body"].encode()
    server = scripted([(answer["status"], body)])
    with pytest.raises(BackendError) as caught:
        backend(server.url, max_retries=0).generate(ASK)
    assert caught.value.kind == answer["kind"] and answer["says"] in str(caught.value)
    assert "Traceback" not in str(caught.value)


@pytest.fixture()
def api(tmp_path: Path, store: Store) -> Iterator[tuple[int, int, Store]]:
    from tests.test_http import POLICY

    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    (tmp_path / "w").mkdir()
    (tmp_path / "forgetmenot.yaml").write_text(POLICY.format(database=store.url))
    config = load_config(tmp_path / "forgetmenot.yaml")
    store.save_verdict(Verdict(model="bot", candidate="v2", baseline="v1", suite="arithmetic",
                               capability="arithmetic", content_hash="h", phase="PASS", diagnosis="none",
                               reason="kept"), [])
    store.add_action(Action(model="bot", kind="alert", trigger="verdict", status="done", detail="kept"))
    from monitor.service.access import _digest

    open_server = HttpServer(Api(config, store), port=0).start()
    closed = HttpServer(Api(config, store, access=Access(tokens=[_digest(b"x" * 32)])), port=0).start()
    yield open_server.port, closed.port, store
    open_server.stop()
    closed.stop()


@pytest.mark.parametrize("request_", REQUESTS, ids=[f"{r['method']} {r['path']}" for r in REQUESTS])
def test_a_bad_api_request_is_refused_and_changes_nothing(api: tuple[int, int, Store],
                                                          request_: dict[str, Any]) -> None:
    open_port, closed_port, store = api
    before = (len(store.verdicts()), [a.detail for a in store.actions()])
    conn = http.client.HTTPConnection("127.0.0.1", closed_port if request_.get("token") else open_port,
                                      timeout=10)
    conn.request(request_["method"], request_["path"])
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert (reply.status, body["error"]) == (request_["status"], request_["error"])
    assert (len(store.verdicts()), [a.detail for a in store.actions()]) == before
