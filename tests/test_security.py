"""Who may reach the monitor and with what it reaches others: the security review's findings on
credentials, each reproduced on real servers (the monitor's own, a real Prometheus scraping it
over TLS with its own auth settings, HTTP receivers that record what arrives)."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from monitor.actions.alertmanager import push
from monitor.actions.deployers import deployer_for
from monitor.actions.signing import InvalidSignature, sign, verify
from monitor.errors import ConfigError
from monitor.policy.loading import load_config
from monitor.policy.schema import Config
from monitor.redaction import redact
from monitor.service.access import Access, load_access
from monitor.service.http import Api, HttpServer
from monitor.store import Store
from monitor.testing.stack import WebhookReceiver, query, stack
from tests.conftest import PROBES

TOKEN = "t0ken-for-the-monitor-api-0123456789"
PASSWORD = "scrape-pa55word"
POLICY = """\
database: {database}
models:
  bot:
    versions: {{v1: {{path: w, adapter: a}}, v2: {{path: w, adapter: a}}}}
    baseline: v1
    live: v2
{extra}
suites: [probes/arithmetic]
"""


def policy(tmp_path: Path, database: str = "sqlite:///fmn.db", extra: str = "") -> Path:
    if not (tmp_path / "probes").exists():
        shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
        (tmp_path / "w").mkdir()
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(POLICY.format(database=database, extra=extra))
    return path


def serve(tmp_path: Path, store: Store, access: Access) -> HttpServer:
    config = load_config(policy(tmp_path, store.url))
    return HttpServer(Api(config, store, access=access), port=0).start()


def get(url: str, header: str | None = None, context: ssl.SSLContext | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": header} if header else {})
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from openssl."""
    folder = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=fmn-ca")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        extra = ["-extfile", "san.ext"] if name == "server" else []
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", *extra)
    return folder


def web_config(folder: Path, **tls: str) -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    data: dict[str, Any] = {"basic_auth_users": {"prometheus": hashed}}
    if tls:
        data["tls_server_config"] = tls
    path = folder / "web.yml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- the HTTP surface -------------------------------------------------------------------------


def test_the_api_needs_a_token_and_the_probes_stay_open(tmp_path: Path, store: Store) -> None:
    (tmp_path / "tokens").write_text(f"# one per line\n{TOKEN}\n")
    server = serve(tmp_path, store, load_access(token_file=tmp_path / "tokens"))
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/api/v1/models") == 401
        assert get(f"{base}/api/v1/models", "Bearer wrong-token-of-some-length") == 401
        assert get(f"{base}/api/v1/models", f"Bearer {TOKEN}") == 200
        assert get(f"{base}/metrics") == 401, "/metrics is protected unless opened"
        assert get(f"{base}/metrics", f"Bearer {TOKEN}") == 200
        assert get(f"{base}/healthz") == 200 and get(f"{base}/readyz") == 200
        head = urllib.request.Request(f"{base}/api/v1/models", method="HEAD")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(head, timeout=10)
        assert refused.value.code == 401 and refused.value.read() == b""
    finally:
        server.stop()


def test_metrics_can_be_opened_while_the_api_stays_closed(tmp_path: Path, store: Store,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMN_API_TOKEN", TOKEN)
    server = serve(tmp_path, store, load_access(token_env="FMN_API_TOKEN", open_metrics=True))
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/metrics") == 200
        assert get(f"{base}/api/v1/actions") == 401
        assert get(f"{base}/api/v1/actions", f"Bearer {TOKEN}") == 200
    finally:
        server.stop()


def test_basic_auth_users_are_checked_against_bcrypt_hashes(tmp_path: Path, store: Store) -> None:
    server = serve(tmp_path, store, load_access(web_config(tmp_path)))
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/api/v1/models", basic("prometheus", PASSWORD)) == 200
        assert get(f"{base}/api/v1/models", basic("prometheus", PASSWORD)) == 200  # remembered
        assert get(f"{base}/api/v1/models", basic("prometheus", "wrong")) == 401
        assert get(f"{base}/api/v1/models", basic("someone", PASSWORD)) == 401
        assert get(f"{base}/api/v1/models", "Basic !!not-base64!!") == 401
    finally:
        server.stop()


def test_tls_with_client_certificates(tmp_path: Path, store: Store, certs: Path) -> None:
    config = web_config(certs, cert_file="server.crt", key_file="server.key",
                        client_auth_type="RequireAndVerifyClientCert", client_ca_file="ca.crt")
    server = serve(tmp_path, store, load_access(config, open_metrics=True))
    url = f"https://127.0.0.1:{server.port}/metrics"
    trusted = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    try:
        with pytest.raises(OSError):  # no client certificate: refused in the handshake (an SSLError)
            get(url, context=trusted)
        with pytest.raises(OSError):  # plain HTTP to a TLS port
            get(url.replace("https", "http"))
        trusted.load_cert_chain(certs / "client.crt", certs / "client.key")
        assert get(url, context=trusted) == 200, "the server still serves after both refusals"
    finally:
        server.stop()


def test_slow_clients_after_a_tls_handshake_never_keep_healthz_from_an_answer(
        tmp_path: Path, store: Store, certs: Path) -> None:
    from monitor.testing.slowloris import SlowClients
    from tests.test_http import healthz_times

    config = web_config(certs, cert_file="server.crt", key_file="server.key")
    server = serve(tmp_path, store, load_access(config))
    trusted = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    try:
        with SlowClients(server.port, count=32, every_s=2.0, context=trusted):
            time.sleep(1.0)
            took = healthz_times(server.port, tries=6, scheme="https", context=trusted)
    finally:
        server.stop()
    assert max(took) < 1.0, took


def test_an_unknown_user_takes_as_long_as_a_known_one(tmp_path: Path, store: Store) -> None:
    """bcrypt at cost 10 takes tens of milliseconds: answering an unknown user without it would tell
    which user names exist."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (tmp_path / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    server = serve(tmp_path, store, load_access(tmp_path / "web.yml"))
    url = f"http://127.0.0.1:{server.port}/api/v1/models"

    def median_s(user: str) -> float:
        took = []
        for n in range(7):
            began = time.perf_counter()
            assert get(url, basic(user, f"wrong-{n}")) == 401
            took.append(time.perf_counter() - began)
        return sorted(took)[3]

    try:
        known, unknown = median_s("prometheus"), median_s("nobody-here")
    finally:
        server.stop()
    assert 0.5 < unknown / known < 2.0, (known, unknown)


def test_optional_client_certificates_with_nothing_else_asked_are_refused(tmp_path: Path,
                                                                          certs: Path) -> None:
    """VerifyClientCertIfGiven lets in whoever shows no certificate: with no user and no token, the
    API would be open to anyone who can reach it."""
    config = web_config(certs, cert_file="server.crt", key_file="server.key",
                        client_auth_type="VerifyClientCertIfGiven", client_ca_file="ca.crt")
    config.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(config.read_text()).items()
                                      if k != "basic_auth_users"}))
    with pytest.raises(ConfigError) as caught:
        load_access(config)
    assert caught.value.problems[0].key == "tls_server_config.client_auth_type"
    assert "the API would be open" in caught.value.problems[0].message
    (tmp_path / "tokens").write_text(TOKEN)
    assert load_access(config, token_file=tmp_path / "tokens").required, "with a token it is closed"


def test_a_real_prometheus_scrapes_with_its_own_tls_and_auth_settings(tmp_path: Path, store: Store,
                                                                      certs: Path) -> None:
    """The point of the exporter-toolkit format: Prometheus' own scrape settings just work."""
    (tmp_path / "tokens").write_text(TOKEN)
    config = web_config(certs, cert_file="server.crt", key_file="server.key")
    server = serve(tmp_path, store, load_access(config, token_file=tmp_path / "tokens"))
    target = [{"targets": [f"127.0.0.1:{server.port}"]}]
    tls = {"ca_file": str(certs / "ca.crt")}
    jobs = [{"job_name": "basic", "scheme": "https", "tls_config": tls, "static_configs": target,
             "basic_auth": {"username": "prometheus", "password": PASSWORD}},
            {"job_name": "bearer", "scheme": "https", "tls_config": tls, "static_configs": target,
             "authorization": {"credentials": TOKEN}},
            {"job_name": "nothing", "scheme": "https", "tls_config": tls, "static_configs": target}]
    rules = tmp_path / "none.rules.yml"
    rules.write_text("groups: []\n")
    try:
        with stack(tmp_path, "", rules, jobs=jobs) as running:
            deadline, up = time.monotonic() + 30, {}
            while time.monotonic() < deadline and len(up) < 3:
                up = {r["metric"]["job"]: r["value"][1] for r in query(running.prometheus, "up")}
                time.sleep(0.5)
    finally:
        server.stop()
    assert up == {"basic": "1", "bearer": "1", "nothing": "0"}


@pytest.mark.parametrize(("content", "key", "message"), [
    ("basic_auth_users: {prometheus: hunter2}", "basic_auth_users.prometheus", "bcrypt hash"),
    ("http_server_config: {http2: false}", "http_server_config", "not supported"),
    ("tls_server_config: {cert_file: nope.crt}", "tls_server_config.key_file", "required"),
    ("tls_server_config: {cert_file: nope.crt, key_file: nope.key}", "tls_server_config.cert_file",
     "cannot be loaded"),
    ("- a list", "", "must be a mapping"),
    ("basic_auth_users: {}\nbasic_auth_users: {prometheus: hunter2}", "basic_auth_users",
     "duplicate key (first written on line 1)"),
])
def test_a_broken_web_config_names_the_key(tmp_path: Path, content: str, key: str, message: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(content + "\n")
    with pytest.raises(ConfigError) as caught:
        load_access(path)
    problem = caught.value.problems[0]
    assert (problem.file, problem.key) == (str(path), key) and message in problem.message


def test_short_or_missing_tokens_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_access(token_file=tmp_path / "tokens")
    with pytest.raises(ConfigError, match=r"\$FMN_UNSET_TOKEN: the token variable is not set"):
        load_access(token_env="FMN_UNSET_TOKEN")


# -- credentials the monitor uses ---------------------------------------------------------------


def test_credentials_come_from_the_environment_or_files_never_inline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    database = "postgresql+psycopg://fmn@db.example:5432/fmn"
    extra = "database_password: {env: FMN_DB_PASSWORD}"
    path = policy(tmp_path, database, extra)
    monkeypatch.setenv("FMN_DB_PASSWORD", "db-pa55-from-env")
    config = load_config(path)
    assert config.database_url() == "postgresql+psycopg://fmn:db-pa55-from-env@db.example:5432/fmn"
    assert redact("connecting with db-pa55-from-env failed") == "connecting with *** failed"
    monkeypatch.delenv("FMN_DB_PASSWORD")
    with pytest.raises(ConfigError, match="database_password: environment variable FMN_DB_PASSWORD is not"):
        load_config(path).database_url()
    (tmp_path / "db.secret").write_text("db-pa55-from-file\n")
    config = load_config(policy(tmp_path, database, "database_password: {file: db.secret}"))
    assert config.database_url().endswith("fmn:db-pa55-from-file@db.example:5432/fmn")


@pytest.mark.parametrize(("extra", "database", "key", "message"), [
    ("database_password: hunter2", "sqlite:///x.db", "database_password", "never written in the policy"),
    ("database_password: {env: A, file: b}", "sqlite:///x.db", "database_password", "exactly one"),
    ("database_password: {env: 'not a name'}", "sqlite:///x.db", "database_password.env", "pattern"),
    ("", "postgresql+psycopg://fmn:hunter2@db/fmn", "database", "the URL carries a password"),
])
def test_inline_credentials_are_refused_with_file_line_and_key(tmp_path: Path, extra: str, database: str,
                                                              key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(policy(tmp_path, database, extra))
    problem = caught.value.problems[0]
    assert problem.key == key and message in problem.message and problem.line is not None
    assert "hunter2" not in str(caught.value)


def _with_deployer(tmp_path: Path, deployer: str) -> Config:
    return load_config(policy(tmp_path, extra=f"    deployer: {deployer}"))


def test_webhook_bodies_are_signed_and_the_helper_verifies_them(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver().start()
    monkeypatch.setenv("FMN_HOOK_SECRET", "hook-secret-0123456789")
    try:
        config = _with_deployer(tmp_path, f"{{kind: webhook, url: 'http://127.0.0.1:{receiver.port}/', "
                                          "secret: {env: FMN_HOOK_SECRET}}")
        said = deployer_for(config, "bot").promote("bot", "v1", 42)
    finally:
        receiver.stop()
    assert said.endswith("(signed)")
    headers, body = receiver.raw[0]
    assert json.loads(body) == {"model": "bot", "version": "v1", "action": 42, "path": str(tmp_path / "w")}
    verify("hook-secret-0123456789", headers, body)
    with pytest.raises(InvalidSignature, match="does not match"):
        verify("hook-secret-0123456789", headers, body.replace(b"v1", b"v9"))
    with pytest.raises(InvalidSignature, match="does not match"):
        verify("another-secret-0123456789", headers, body)
    with pytest.raises(InvalidSignature, match="away from now"):
        verify("hook-secret-0123456789", headers, body, now=time.time() + 3600)
    with pytest.raises(InvalidSignature, match="headers are required"):
        verify("hook-secret-0123456789", {}, body)
    old = sign("hook-secret-0123456789", body, now=time.time() - 600)
    with pytest.raises(InvalidSignature, match="away from now"):
        verify("hook-secret-0123456789", old, body)


@pytest.mark.parametrize("headers", [
    {"X-Forgetmenot-Timestamp": "²", "X-Forgetmenot-Signature": "sha256=00"},
    {"X-Forgetmenot-Timestamp": "9" * 5000, "X-Forgetmenot-Signature": "sha256=00"},
    {"X-Forgetmenot-Timestamp": "1_700_000_000", "X-Forgetmenot-Signature": "sha256=00"},
    {"X-Forgetmenot-Timestamp": "{now}", "X-Forgetmenot-Signature": "sha256=é"},
    {"X-Forgetmenot-Timestamp": "{now}", "X-Forgetmenot-Signature": "sha256=\udcff"},
    {"X-Forgetmenot-Timestamp": "{now}", "X-Forgetmenot-Signature": b"sha256=00"},
])
def test_a_hostile_signature_header_is_an_invalid_signature_and_nothing_else(headers: dict[str, Any]) -> None:
    stamped = {k: v.replace("{now}", str(int(time.time()))) if isinstance(v, str) else v
               for k, v in headers.items()}
    with pytest.raises(InvalidSignature):
        verify("hook-secret-0123456789", stamped, b"{}")


def test_alertmanager_and_vllm_get_their_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver().start()
    url = f"http://127.0.0.1:{receiver.port}"
    (tmp_path / "vllm.key").write_text("vllm-key-0123456789\n")
    monkeypatch.setenv("FMN_AM_TOKEN", "am-token-0123456789")
    extra = (f"    deployer: {{kind: vllm-lora, url: '{url}/v1', alias: bot, api_key: {{file: vllm.key}}}}\n"
             f"policy: {{alertmanager: {{url: '{url}', token: {{env: FMN_AM_TOKEN}}}}}}")
    try:
        config = load_config(policy(tmp_path, extra=extra))
        push(config, [{"labels": {"alertname": "X"}}])
        deployer_for(config, "bot").promote("bot", "v1", 1)
    finally:
        receiver.stop()
    sent = [headers.get("Authorization") for headers, _ in receiver.raw]
    assert sent == ["Bearer am-token-0123456789"] + ["Bearer vllm-key-0123456789"] * 2


def test_a_missing_deployer_secret_fails_the_move_with_the_reason(tmp_path: Path) -> None:
    from monitor.errors import DeployError

    config = _with_deployer(tmp_path, "{kind: webhook, url: 'http://127.0.0.1:9/', "
                                      "secret: {file: missing.secret}}")
    with pytest.raises(DeployError, match=r"models.bot.deployer.secret: file .*missing.secret cannot be"):
        deployer_for(config, "bot")


def test_vllm_lora_falls_back_to_the_backends_key_however_it_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The older `api_key_env` shorthand is the same source as `api_key: {env: ...}`: the
    backend uses it, and so does the vllm-lora deployer that moves that backend's adapters."""
    receiver = WebhookReceiver().start()
    monkeypatch.setenv("FMN_VLLM_KEY", "vllm-env-key-0123456789")
    path = tmp_path / "forgetmenot.yaml"
    shutil.copytree(PROBES / "arithmetic", tmp_path / "probes" / "arithmetic")
    (tmp_path / "w").mkdir()
    path.write_text(f"""\
models:
  bot:
    backend: {{kind: openai, base_url: "http://127.0.0.1:{receiver.port}/v1", api_key_env: FMN_VLLM_KEY}}
    versions: {{v1: {{served_name: bot, path: w, adapter: a}}, v2: {{served_name: bot, path: w, adapter: a}}}}
    baseline: v1
    live: v2
    deployer: {{kind: vllm-lora, alias: bot}}
suites: [probes/arithmetic]
""")
    try:
        deployer_for(load_config(path), "bot").promote("bot", "v1", 1)
    finally:
        receiver.stop()
    assert [h.get("Authorization") for h, _ in receiver.raw] == ["Bearer vllm-env-key-0123456789"] * 2


def test_a_credential_file_that_is_binary_or_huge_is_a_config_error(tmp_path: Path) -> None:
    """Read through the same capped reader as every other file from outside: a binary secret file
    was a UnicodeDecodeError traceback."""
    (tmp_path / "db.secret").write_bytes(b"\xff\xfe\x00binary")
    config = load_config(policy(tmp_path, "postgresql+psycopg://fmn@db/fmn",
                                "database_password: {file: db.secret}"))
    with pytest.raises(ConfigError, match=r"database_password: file .*db\.secret cannot be read: not UTF-8"):
        config.database_url()
    (tmp_path / "tokens").write_text("t" * (70 << 10))
    with pytest.raises(ConfigError, match="cannot be read: the file is 71,680 bytes; at most 65,536"):
        load_access(token_file=tmp_path / "tokens")
