"""Who may read what from the monitor's HTTP face, and over what.

A deployment binds 0.0.0.0 so Prometheus and the kubelet can reach it, and the API shows verdicts
and deploy details; so the server speaks the **Prometheus exporter-toolkit web-config** format
(the file every exporter and Prometheus itself take with `--web.config.file`): TLS, client
certificates checked against a CA (mTLS), and bcrypt-hashed basic-auth users. Prometheus'
own `tls_config`, `basic_auth` and `authorization` scrape settings then work unchanged. Bearer
tokens, which that format lacks and which Kubernetes Secrets hand out most easily, come from a
file (one per line) or an environment variable.

`/healthz` and `/readyz` stay open: the kubelet probes them without credentials and they say
nothing but "ok". `/metrics` is protected like the API unless the operator opens it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError, Problem
from monitor.policy import positions
from monitor.policy.bounds import MAX_POLICY_BYTES, MAX_SECRET_BYTES, read_capped
from monitor.redaction import remember

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version"}
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


@dataclass
class Access:
    """The credentials the server accepts. Empty: everything is open (loopback use, tests)."""

    tokens: list[bytes] = field(default_factory=list)  # SHA-256 of each accepted bearer token
    users: dict[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    open_metrics: bool = False
    tls: ssl.SSLContext | None = None
    _verified: set[bytes] = field(default_factory=set)  # basic credentials bcrypt already accepted
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def required(self) -> bool:
        return bool(self.tokens or self.users)

    def challenge(self) -> str:
        return 'Basic realm="forgetmenot"' if self.users else 'Bearer realm="forgetmenot"'

    def open_to_all(self, path: str) -> bool:
        """No credential is asked on this path."""
        opened_metrics = self.open_metrics and path == "/metrics"
        return not self.required or path in OPEN_PATHS or opened_metrics

    def allows(self, path: str, authorization: str) -> bool:
        """Whether a request to `path` with this Authorization header may be answered. A basic
        credential not seen before costs a bcrypt check: call it off the event loop."""
        if self.open_to_all(path):
            return True
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() == "bearer" and self.tokens:
            return _any_equal(_digest(credential.strip().encode()), self.tokens)
        if scheme.lower() == "basic" and self.users:
            return self._basic(credential.strip())
        return False

    def _basic(self, credential: str) -> bool:
        """bcrypt is slow on purpose (~50 ms a check); a scrape every few seconds would pay it
        each time, so a pair it accepted once is remembered by its digest, never in clear."""
        key = _digest(credential.encode())
        if key in self._verified:
            return True
        try:
            user, _, password = base64.b64decode(credential, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        # An unknown user is checked against a real hash all the same, so the time an answer
        # takes never tells which user names exist; the result is thrown away.
        checked = _bcrypt_ok(password.encode(), hashed or self._decoy())
        if hashed is None or not checked:
            return False
        with self._lock:
            if len(self._verified) > 1024:
                self._verified.clear()
            self._verified.add(key)
        return True

    def _decoy(self) -> bytes:
        return next(iter(self.users.values()))


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def _any_equal(candidate: bytes, accepted: list[bytes]) -> bool:
    """Compared against every token in constant time, so timing tells nothing."""
    found = False
    for token in accepted:
        found |= hmac.compare_digest(candidate, token)
    return found


def _bcrypt_ok(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password[:72], hashed))
    except ValueError:
        return False


def load_access(web_config: Path | None = None, token_file: Path | None = None,
                token_env: str | None = None, open_metrics: bool = False) -> Access:
    """The server's credentials; every problem is a ConfigError naming the file and key."""
    access = Access(open_metrics=open_metrics)
    if web_config is not None:
        _read_web_config(web_config, access)
    if token_file is not None:
        access.tokens += [_digest(t.encode()) for t in _tokens_from_file(token_file)]
    if token_env:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise ConfigError([Problem(f"${token_env}", None, "", "the token variable is not set or empty")])
        access.tokens.append(_digest(remember(value).encode()))
    _refuse_open_mtls(access, web_config)
    return access


def _refuse_open_mtls(access: Access, web_config: Path | None) -> None:
    """VerifyClientCertIfGiven checks a certificate only when a client shows one: with no user
    and no token to ask of the others, every client without a certificate would be let in."""
    optional = access.tls is not None and access.tls.verify_mode == ssl.CERT_OPTIONAL
    if optional and not access.required:
        message = ("VerifyClientCertIfGiven lets in every client that shows no certificate, and no "
                   "basic_auth_users or bearer token is asked of them: the API would be open. Use "
                   "RequireAndVerifyClientCert, or add basic_auth_users, --token-file or --token-env")
        raise ConfigError([Problem(str(web_config), None, "tls_server_config.client_auth_type", message)])


def _read(path: Path, limit: int) -> str:
    try:
        return read_capped(path, limit)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot be read: {exc.strerror or exc}")]) from exc


def _tokens_from_file(path: Path) -> list[str]:
    where = str(path)
    lines = _read(path, MAX_SECRET_BYTES).splitlines()
    tokens = [remember(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    short = [n for n, t in enumerate(tokens, 1) if len(t) < 16]
    if not tokens or short:
        raise ConfigError([Problem(where, None, "", "needs one token per line, each at least 16 "
                                                    "characters (`openssl rand -hex 32` makes one)")])
    return tokens


def _read_web_config(path: Path, access: Access) -> None:
    """Parsed as strictly as the policy: a key written twice (two `basic_auth_users`, the second
    silently winning) is refused with both lines, as are aliases and deep nesting."""
    where = str(path)
    data = positions.parse(_read(path, MAX_POLICY_BYTES), where).data or {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(where, None, "", "must be a mapping (exporter-toolkit web config)")])
    unknown = set(data) - {"tls_server_config", "basic_auth_users"}
    if unknown:
        raise ConfigError([Problem(where, None, key, "not supported by forgetmenot's server; it takes "
                                   "tls_server_config and basic_auth_users") for key in sorted(unknown)])
    access.users = _users(where, data.get("basic_auth_users") or {})
    if data.get("tls_server_config"):
        access.tls = _tls_context(where, path.parent, data["tls_server_config"])


def _users(where: str, users: Any) -> dict[str, bytes]:
    if not isinstance(users, dict):
        raise ConfigError([Problem(where, None, "basic_auth_users", "must map user names to bcrypt hashes")])
    problems = [Problem(where, None, f"basic_auth_users.{user}", "must be a bcrypt hash ($2y$...), never "
                        "a password in clear (`htpasswd -nbBC 10 '' PASSWORD | tr -d ':'` makes one)")
                for user, hashed in users.items()
                if not isinstance(hashed, str) or not hashed.startswith(_BCRYPT_PREFIXES)]
    if problems:
        raise ConfigError(problems)
    return {str(user): hashed.encode() for user, hashed in users.items()}


def _tls_context(where: str, base: Path, spec: Any) -> ssl.SSLContext:
    def problem(key: str, message: str) -> ConfigError:
        return ConfigError([Problem(where, None, f"tls_server_config.{key}", message)])

    if not isinstance(spec, dict):
        raise problem("", "must be a mapping")
    for key in sorted(set(spec) - _TLS_KEYS):
        raise problem(key, f"not supported; forgetmenot's server takes {', '.join(sorted(_TLS_KEYS))}")
    for key in ("cert_file", "key_file"):
        if not spec.get(key):
            raise problem(key, "is required for TLS")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(base / spec["cert_file"], base / spec["key_file"])
    except (OSError, ssl.SSLError) as exc:
        raise problem("cert_file", f"certificate and key cannot be loaded: {exc}") from exc
    auth = spec.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise problem("client_auth_type", f"'{auth}' is not supported; use one of {', '.join(_CLIENT_AUTH)}")
    context.verify_mode = _CLIENT_AUTH[auth]
    if auth != "NoClientCert":
        if not spec.get("client_ca_file"):
            raise problem("client_ca_file", f"is required with client_auth_type {auth}")
        try:
            context.load_verify_locations(base / spec["client_ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise problem("client_ca_file", f"cannot be loaded: {exc}") from exc
    for key, attribute in (("min_version", "minimum_version"), ("max_version", "maximum_version")):
        if key in spec:
            if spec[key] not in _TLS_VERSIONS:
                raise problem(key, f"use one of {', '.join(_TLS_VERSIONS)}")
            setattr(context, attribute, _TLS_VERSIONS[spec[key]])
    if "min_version" not in spec:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
