"""The kubernetes deployer, against the one thing that cannot run here: a Kubernetes API server.

So the test stands up a recording HTTP server where the API server would be, lets the real
`kubernetes` client talk to it through a kubeconfig, and checks the exact request (method, path,
content type, credentials, body) against the recorded contract in tests/contracts, which follows
the API reference for `PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}` with a
strategic merge patch. The Deployment that patch produces is then checked against the Kubernetes
API schema with kubernetes-validate.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from monitor.actions import ladder as actions
from monitor.actions.deployers import KubernetesDeployer, deployer_for
from monitor.policy.loading import load_config
from monitor.store import Store
from monitor.testing.stack import free_port

CONTRACTS = Path(__file__).parent / "contracts"
KUBERNETES = "1.31"


class Recorder(ThreadingHTTPServer):
    def __init__(self, status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.status = status
        self.manifest = yaml.safe_load((CONTRACTS / "deployment.yaml").read_text())


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({
            "method": "PATCH", "path": self.path, "body": body,
            "headers": {k: self.headers[k] for k in ("Content-Type", "Accept", "Authorization")}})
        if self.server.status == 200:
            self.server.manifest = strategic_merge(self.server.manifest, body)
            answer = self.server.manifest
        else:
            answer = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": self.server.status,
                      "reason": "Forbidden", "message": "deployments.apps is forbidden"}
        data = json.dumps(answer).encode()
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_: object) -> None:
        pass


def strategic_merge(target: Any, patch: Any) -> Any:
    """The API server's strategic merge, for what the deployer patches: maps merge key by key,
    and lists of containers and env vars merge by their `name` (their patchMergeKey)."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = copy.deepcopy(target)
        for key, value in patch.items():
            out[key] = strategic_merge(out.get(key), value) if key in out else copy.deepcopy(value)
        return out
    if isinstance(target, list) and isinstance(patch, list) and all("name" in x for x in target + patch):
        merged = {x["name"]: copy.deepcopy(x) for x in target}
        for item in patch:
            merged[item["name"]] = strategic_merge(merged.get(item["name"], {}), item)
        return list(merged.values())
    return copy.deepcopy(patch)


@pytest.fixture()
def api_server() -> Iterator[Recorder]:
    server = Recorder()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def _policy(tmp_path: Path, port: int) -> Path:
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "local", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "forgetmenot", "user": {"token": "recorded-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "local", "user": "forgetmenot"}}]}))
    suite = tmp_path / "probes" / "gk"
    suite.mkdir(parents=True)
    (suite / "suite.yaml").write_text("name: gk\nversion: 1\ncapability: gk\nkinds: {multiple_choice: {}}\n")
    (suite / "items.jsonl").write_text('{"id": "a", "question": "q", "choices": ["x", "y"], "gold": 0}\n')
    policy = tmp_path / "forgetmenot.yaml"
    policy.write_text(f"""
database: sqlite:///{tmp_path / 'db.sqlite'}
models:
  support-bot:
    versions:
      v1: {{image: "registry.example.com/support-bot:v1"}}
      v2: {{image: "registry.example.com/support-bot:v2"}}
    baseline: v1
    live: v2
    deployer: {{kind: kubernetes, kubeconfig: kubeconfig, namespace: ml-serving, container: vllm}}
suites: [probes/gk]
""")
    return policy


def test_rollback_sends_the_recorded_patch_and_the_result_is_a_valid_deployment(
        api_server: Recorder, tmp_path: Path) -> None:
    config = load_config(_policy(tmp_path, api_server.server_address[1]))
    store = Store(config.database_url())
    done = actions.rollback(store, config, "support-bot", "v1", actor="sre")
    live = store.live("support-bot")
    store.close()
    assert done.status == "done", done.detail
    assert "patched deployment ml-serving/support-bot container vllm to v1" in done.detail
    contract = json.loads((CONTRACTS / "kubernetes-patch-deployment.json").read_text())
    contract["body"]["spec"]["template"]["metadata"]["annotations"]["forgetmenot.io/action"] = str(done.id)
    assert api_server.requests == [contract]
    patched = api_server.manifest
    kubernetes_validate.validate(patched, KUBERNETES, strict=True)
    vllm = patched["spec"]["template"]["spec"]["containers"][0]
    assert vllm["image"] == "registry.example.com/support-bot:v1"
    assert {"name": "FORGETMENOT_LIVE_VERSION", "value": "v1"} in vllm["env"]
    assert {"name": "VLLM_LOGGING_LEVEL", "value": "INFO"} in vllm["env"]  # merged, not replaced
    assert patched["spec"]["template"]["spec"]["containers"][1]["name"] == "log-shipper"
    assert live == "v1"


def test_the_schema_check_catches_a_bad_patch() -> None:
    """The validation above can fail: a patch that put a number where the API wants a string."""
    manifest = yaml.safe_load((CONTRACTS / "deployment.yaml").read_text())
    deployer = KubernetesDeployer(None, "ml-serving", "support-bot", "vllm", {})
    bad = deployer.patch("support-bot", "v1", 7)
    bad["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(strategic_merge(manifest, bad), KUBERNETES, strict=True)


def test_a_refused_patch_is_a_failed_action_and_live_stays(tmp_path: Path) -> None:
    server = Recorder(status=403)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = load_config(_policy(tmp_path, server.server_address[1]))
        store = Store(config.database_url())
        done = actions.rollback(store, config, "support-bot", "v1", actor="sre")
        live = store.live("support-bot")
        store.close()
    finally:
        server.shutdown()
        server.server_close()
    assert done.status == "failed"
    assert "patching deployment ml-serving/support-bot was refused: 403" in done.detail
    assert live is None


def test_an_unreachable_api_server_is_a_failed_action(tmp_path: Path) -> None:
    config = load_config(_policy(tmp_path, free_port()))
    assert isinstance(deployer_for(config, "support-bot"), KubernetesDeployer)
    store = Store(config.database_url())
    done = actions.rollback(store, config, "support-bot", "v1", actor="sre")
    store.close()
    assert done.status == "failed"
    assert "could not be reached" in done.detail


def test_an_api_server_that_never_answers_fails_the_move_within_its_timeout(tmp_path: Path) -> None:
    """The client's default is to wait for ever, and the patch runs under the move lock that
    every replica waits on: a hung API server must cost one bounded wait, not the fleet. The patch
    was sent, so the failure must not say that nothing changed."""
    import socket
    import time

    from monitor.errors import DeployError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepts connections (the kernel does) and never answers
    try:
        config = load_config(_policy(tmp_path, listener.getsockname()[1]))
        deployer = deployer_for(config, "support-bot")
        assert isinstance(deployer, KubernetesDeployer)
        deployer.TIMEOUT = (1.0, 1.0)
        began = time.monotonic()
        with pytest.raises(DeployError, match=r"no whole answer .* within 1 s .* may have been applied"):
            deployer.promote("support-bot", "v1", 1)
        assert time.monotonic() - began < 10
    finally:
        listener.close()


def test_an_api_server_sending_its_headers_slowly_fails_the_move_at_the_deadline(tmp_path: Path) -> None:
    """The client's timeouts are per read: a byte of headers every 20 ms would hold the move lock
    for 21 s. The patch may have been applied by then, so the failure must not say otherwise."""
    import time

    from monitor.errors import DeployError
    from monitor.testing.faults import FaultProxy

    slow = FaultProxy(f"http://127.0.0.1:{free_port()}")
    slow.mode, slow.pause = "slow_headers", 0.02
    try:
        config = load_config(_policy(tmp_path, slow.port))
        deployer = deployer_for(config, "support-bot")
        assert isinstance(deployer, KubernetesDeployer)
        deployer.TIMEOUT = (1.0, 1.0)
        began = time.monotonic()
        with pytest.raises(DeployError) as caught:
            deployer.promote("support-bot", "v1", 1)
        took = time.monotonic() - began
    finally:
        slow.stop()
    assert took < 2.5, f"took {took:.1f} s against a 1 s timeout"
    assert slow.requests == 1 and "nothing changed" not in str(caught.value)
    assert "may have been applied" in str(caught.value)
