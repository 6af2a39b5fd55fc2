"""Credentials written into URLs never leave the process: not in an item's error, an action's
detail (served by the API, pushed to Alertmanager), an exception's message or a log line. The
review found `https://user:pass@host` in all four."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from monitor.actions import ladder as actions
from monitor.actions.deployers import WebhookDeployer
from monitor.errors import BackendError, ConfigError, DeployError, ForgetmenotError
from monitor.policy.suites import load_suite
from monitor.probing.backends.endpoint import Endpoint
from monitor.probing.backends.openai import OpenAIBackend
from monitor.probing.backends.tokens import ServerTokenizer
from monitor.probing.run import VersionRef, probe_suite
from monitor.redaction import RedactingFilter, redact
from monitor.store import Store
from monitor.testing.stack import free_port
from tests.conftest import PROBES
from tests.test_actions import setup, verdict

SECRET = "s3cret-Pa55"


@pytest.mark.parametrize(("text", "shown"), [
    (f"GET https://monitor:{SECRET}@vllm:8000/v1/completions: refused",
     "GET https://monitor:***@vllm:8000/v1/completions: refused"),
    (f"postgresql+psycopg://fmn:{SECRET}@db:5432/fmn failed",
     "postgresql+psycopg://fmn:***@db:5432/fmn failed"),
    (f"Authorization: Bearer {SECRET}", "Authorization: Bearer ***"),
    (f"http://h/x?model=a&api_key={SECRET}&n=1", "http://h/x?model=a&api_key=***&n=1"),
    (f'{{"password": "{SECRET}", "user": "fmn"}}', '{"password": "***", "user": "fmn"}'),
    ("http://vllm:8000/v1/completions: HTTP 503", "http://vllm:8000/v1/completions: HTTP 503"),
])
def test_redact_masks_credentials_and_keeps_the_rest(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_every_error_forgetmenot_raises_is_redacted() -> None:
    for error in (ForgetmenotError(f"https://u:{SECRET}@h"), BackendError(f"https://u:{SECRET}@h/v1 down")):
        assert SECRET not in str(error) and "***" in str(error)


def test_an_endpoint_with_credentials_that_is_down_stores_no_secret(store: Store) -> None:
    url = f"http://monitor:{SECRET}@127.0.0.1:{free_port()}/v1"
    endpoint = Endpoint(url, timeout_s=2, max_retries=0)
    backend = OpenAIBackend(endpoint, ServerTokenizer(endpoint, "m"), model="m")
    suite = load_suite(PROBES / "arithmetic").only(["multiple_choice"])
    run = probe_suite(store, backend, suite, VersionRef("bot", "v1"))
    errors = [r.error or "" for r in store.results(run.id or 0)]
    assert run.status == "error" and errors and all("monitor:***@127.0.0.1" in e for e in errors)
    assert not any(SECRET in e for e in [*errors, run.error or ""])


def test_a_policy_with_a_password_in_a_url_is_refused_without_repeating_it(store: Store,
                                                                           tmp_path: Path) -> None:
    url = f"http://deployer:{SECRET}@127.0.0.1:{free_port()}/hook"
    with pytest.raises(ConfigError) as caught:
        setup(tmp_path, store, deployer=f"{{kind: webhook, url: '{url}'}}")
    assert "models.bot.deployer.url: the URL carries a password" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_a_failed_deploy_to_a_url_with_credentials_keeps_no_secret_in_the_audit(store: Store,
                                                                              tmp_path: Path) -> None:
    """Defence in depth: a URL with a password that did not come through the policy (a plugin, a
    redirect) still never reaches the audit trail."""
    config = setup(tmp_path, store, deployer="{kind: webhook, url: 'http://127.0.0.1:1/hook'}")
    url = f"http://deployer:{SECRET}@127.0.0.1:{free_port()}/hook"
    with pytest.raises(DeployError) as caught:
        WebhookDeployer(url).promote("bot", "v1", 7)
    assert "deployer:***@127.0.0.1" in str(caught.value) and SECRET not in str(caught.value)
    verdict(store, "v2", "PASS")
    done = actions.rollback(store, config, "bot", "v2", "bob")
    assert done.status == "failed"
    assert all(SECRET not in f"{a.detail} {a.reason}" for a in store.actions())


def test_log_lines_and_their_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test-redaction")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise RuntimeError(f"connect to postgresql://fmn:{SECRET}@db/fmn refused")
    except RuntimeError:
        logger.exception("probe of %s failed", f"https://u:{SECRET}@vllm/v1")
    assert SECRET not in caplog.text and "https://u:***@vllm/v1" in caplog.text
    assert "postgresql://fmn:***@db/fmn" in caplog.text
