"""How a model's live version is moved: one small protocol, one class per way of serving.

The action ladder never touches serving directly; it asks the model's deployer to make a version
live, and records what the deployer said. `registry` (the embedded default) keeps the pointer in
the monitor's own database and mirrors it to a JSON file a serving process can watch; `webhook`
posts the change to a URL and lets the receiver do it; `vllm-lora` re-points the adapter name
users call on a running vLLM; `kubernetes` patches the serving Deployment and lets its rollout
replace the pods.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from monitor.actions.signing import sign
from monitor.errors import BackendError, ConfigError, DeployError, MissingExtra
from monitor.policy.bounds import name_problem
from monitor.policy.schema import Config, SecretSpec
from monitor.probing.backends.deadline import Expired, watch_connections, within
from monitor.probing.backends.endpoint import Endpoint
from monitor.probing.weights import home
from monitor.store import utcnow
from monitor.vocabulary import ErrorKind


class Deployer(Protocol):
    def promote(self, model: str, version: str, action_id: int | None) -> str:
        """Make `version` live; return what was done, for the audit trail."""
        ...

    def current(self, model: str) -> str | None:
        """The version serving says is live, or None where the deployer cannot know (a webhook).
        Asked only to settle a move its process did not live to confirm."""
        ...


class RegistryDeployer:
    """Writes `<dir>/<model>.json` atomically, for serving to read; the pointer in the database
    is set by the ladder after every deployer's move."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def promote(self, model: str, version: str, action_id: int | None) -> str:
        problem = name_problem(model)
        if problem:  # the policy refuses such names; a caller that bypassed it still cannot escape
            raise DeployError(f"registry: {problem}")
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{model}.json"
        record = {"model": model, "live": version, "updated_at": utcnow().isoformat(), "action": action_id}
        with tempfile.NamedTemporaryFile("w", dir=self.directory, delete=False, suffix=".tmp") as out:
            json.dump(record, out, indent=2)
        os.replace(out.name, target)
        return f"registry: {model} live = {version} ({target})"

    def current(self, model: str) -> str | None:
        try:
            live = json.loads((self.directory / f"{model}.json").read_text()).get("live")
        except (OSError, ValueError, AttributeError):
            return None
        return live if isinstance(live, str) else None


class WebhookDeployer:
    """POSTs {model, version, action, path} once (a retry could deploy twice), within `timeout_s`
    from connecting to the answer's last byte; any error or non-2xx answer is a failed
    deployment. `path` is the version's weights folder where it has one (a recovered version's
    is where retraining wrote it), for a receiver that shares the disk.
    With a `secret`, the body is signed (`monitor.actions.signing`) so the receiver can refuse
    moves nobody asked for."""

    def __init__(self, url: str, paths: Mapping[str, str] | None = None, timeout_s: float = 30.0,
                 secret: str | None = None) -> None:
        self.endpoint = Endpoint(url, timeout_s=timeout_s, max_retries=0, concurrency=1)
        self.paths = paths or {}
        self._secret = secret

    def __repr__(self) -> str:
        return f"WebhookDeployer({self.endpoint.base_url!r}, signed={self._secret is not None})"

    def promote(self, model: str, version: str, action_id: int | None) -> str:
        payload = {"model": model, "version": version, "action": action_id, "path": self.paths.get(version)}
        secret = self._secret
        try:
            self.endpoint.post_text("", payload, sign=(lambda body: sign(secret, body)) if secret else None)
        except BackendError as exc:
            raise DeployError(f"webhook: {exc}{_maybe_done(exc)}") from exc
        return f"webhook {self.endpoint.base_url}: accepted" + (" (signed)" if secret else "")

    def current(self, model: str) -> str | None:
        """A webhook is told, never asked: only the receiver knows what it did."""
        return None


class VllmLoraDeployer:
    """Re-points the adapter name users call (`alias`) on a running vLLM at another version's
    adapter: unload the alias, then load it from that version's folder (vLLM's
    `/v1/load_lora_adapter`; the server needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)."""

    def __init__(self, endpoint: Endpoint, alias: str, adapters: Mapping[str, str]) -> None:
        self.endpoint = endpoint
        self.alias = alias
        self.adapters = adapters

    def promote(self, model: str, version: str, action_id: int | None) -> str:
        folder = self.adapters.get(version)
        if folder is None:
            raise DeployError(f"vllm-lora can only make an adapter version live; {model}/{version} has no "
                              "adapter folder (path)")
        try:
            self.endpoint.post_text("/unload_lora_adapter", {"lora_name": self.alias})
        except BackendError as exc:
            if exc.kind not in ("not_found", "rejected"):  # not loaded yet is fine
                raise DeployError(f"vllm-lora {self.endpoint.base_url}: {exc}") from exc
        try:
            self.endpoint.post_text("/load_lora_adapter", {"lora_name": self.alias, "lora_path": folder})
        except BackendError as exc:
            raise DeployError(f"vllm-lora {self.endpoint.base_url}: '{self.alias}' was unloaded but "
                              f"loading {folder} failed, so nothing answers to it now: {exc}"
                              f"{_maybe_done(exc)}") from exc
        return f"vllm-lora {self.endpoint.base_url}: '{self.alias}' now serves {version} ({folder})"

    def current(self, model: str) -> str | None:
        """vLLM lists each adapter with the folder it was loaded from (`root`)."""
        try:
            served = self.endpoint.get("/models").get("data", [])
        except BackendError:
            return None
        roots = {str(m.get("root")) for m in served if isinstance(m, dict) and m.get("id") == self.alias}
        found = [version for version, folder in self.adapters.items() if folder in roots]
        return found[0] if len(found) == 1 else None


class KubernetesDeployer:
    """Patches one container of a Deployment (strategic merge): its image when the version names
    one, and always the FORGETMENOT_LIVE_VERSION variable and a pod-template annotation, so the
    pods roll even when the image stays and the serving process can tell what it serves. The
    rollout itself is Kubernetes' job; the patch is accepted or the move failed.

    Each call has a total deadline: the client's own timeouts are per read (its default is to
    wait for ever), so `_kubernetes` has its connections watched (`deadline.watch_connections`)."""

    CONTENT_TYPE = "application/strategic-merge-patch+json"
    TIMEOUT = (5.0, 30.0)  # connect, and the whole call from connecting to the answer's last byte

    def __init__(self, api: Any, namespace: str, deployment: str, container: str,
                 images: Mapping[str, str]) -> None:
        self.api = api
        self.namespace, self.deployment, self.container = namespace, deployment, container
        self.images = images

    def patch(self, model: str, version: str, action_id: int | None) -> dict[str, Any]:
        container: dict[str, Any] = {"name": self.container,
                                     "env": [{"name": "FORGETMENOT_LIVE_VERSION", "value": version}]}
        if version in self.images:
            container["image"] = self.images[version]
        annotations = {"forgetmenot.io/model": model, "forgetmenot.io/live-version": version,
                       "forgetmenot.io/action": str(action_id or "")}
        return {"spec": {"template": {"metadata": {"annotations": annotations},
                                      "spec": {"containers": [container]}}}}

    def promote(self, model: str, version: str, action_id: int | None) -> str:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        where = f"deployment {self.namespace}/{self.deployment}"
        body = self.patch(model, version, action_id)
        try:
            with within(self.TIMEOUT[1]):
                self.api.patch_namespaced_deployment(self.deployment, self.namespace, body,
                                                     _content_type=self.CONTENT_TYPE,
                                                     _request_timeout=self.TIMEOUT)
        except ApiException as exc:
            raise DeployError(_refused(where, exc)) from exc
        except (HTTPError, Expired) as exc:
            raise DeployError(self._unanswered(where, exc)) from exc
        image = f", image {self.images[version]}" if version in self.images else ""
        return f"kubernetes: patched {where} container {self.container} to {version}{image}"

    def current(self, model: str) -> str | None:
        """The annotation every patch sets on the pod template."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            with within(self.TIMEOUT[1]):
                found = self.api.read_namespaced_deployment(self.deployment, self.namespace,
                                                            _request_timeout=self.TIMEOUT)
        except (ApiException, HTTPError, Expired):
            return None
        annotations = found.spec.template.metadata.annotations or {}
        live = annotations.get("forgetmenot.io/live-version")
        return live if isinstance(live, str) else None

    def _unanswered(self, where: str, exc: Exception) -> str:
        """Whether the patch can have reached the API server decides what the audit row says."""
        from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, SSLError

        reason = exc.reason if isinstance(exc, MaxRetryError) else exc
        name = reason.__class__.__name__
        if isinstance(reason, ConnectTimeoutError | SSLError):  # refused, or no connection made
            cause = f"the API server could not be reached to patch {where}: {name}"
            return f"kubernetes: {cause}; nothing changed"
        cause = f"no whole answer to the patch of {where} within {self.TIMEOUT[1]:g} s ({name})"
        return f"kubernetes: {cause}; it was sent and may have been applied: check the Deployment"


def _refused(where: str, exc: Any) -> str:
    """A 4xx changed nothing; a 5xx may come after the API server stored the change."""
    said = f"kubernetes: patching {where} was refused: {exc.status} {exc.reason}"
    if exc.status is not None and exc.status >= 500:
        return f"{said}; it may have been applied all the same: check the Deployment"
    return f"{said}; nothing changed"


def _maybe_done(exc: BackendError) -> str:
    """A request that was sent but not answered in full may have been acted on."""
    if exc.kind in (ErrorKind.TIMEOUT, ErrorKind.SERVER):
        return "; the receiver may have acted on it all the same"
    return ""


@dataclass(frozen=True)
class DeployerKind:
    """How to build one kind of deployer, and what it can serve. `merged_weights`: it can make a
    folder of merged weights live, which is what recovery retraining produces; `why_not` says
    otherwise, in words for the audit trail."""

    build: Callable[[Config, str], Deployer]
    merged_weights: bool = True
    why_not: str = ""


DEPLOYERS: dict[str, DeployerKind] = {}


Build = Callable[[Config, str], Deployer]


def deploys(kind: str, merged_weights: bool = True, why_not: str = "") -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        DEPLOYERS[kind] = DeployerKind(build, merged_weights, why_not)
        return build

    return register


def deployer_for(config: Config, model: str) -> Deployer:
    return DEPLOYERS[config.models[model].deployer.kind].build(config, model)


@deploys("registry")
def _registry(config: Config, model: str) -> Deployer:
    spec = config.models[model].deployer
    return RegistryDeployer(config.resolve(spec.path) if spec.path else home() / "live")


@deploys("webhook")
def _webhook(config: Config, model: str) -> Deployer:
    spec = config.models[model].deployer
    if not spec.url:
        raise DeployError(f"{model}: the webhook deployer needs url")
    versions = config.models[model].versions
    paths = {name: str(config.resolve(v.path)) for name, v in versions.items() if v.path}
    secret = _secret(config, spec.secret, f"models.{model}.deployer.secret")
    return WebhookDeployer(spec.url, paths, secret=secret)


def _secret(config: Config, spec: SecretSpec | None, key: str) -> str | None:
    """A deployer's credential; missing, the move fails with the reason on its audit row."""
    if spec is None:
        return None
    try:
        return config.secret(spec, key)
    except ConfigError as exc:
        raise DeployError(str(exc)) from exc


@deploys("kubernetes", merged_weights=False, why_not="deployed on Kubernetes by image; retraining makes "
         "weights on the monitor's disk, and building an image from them is not forgetmenot's job")
def _kubernetes(config: Config, model: str) -> KubernetesDeployer:
    try:
        from kubernetes import client
        from kubernetes import config as kube
    except ImportError as exc:
        raise MissingExtra("kubernetes", "kubernetes") from exc
    spec = config.models[model]
    deployer = spec.deployer
    try:
        if deployer.kubeconfig:
            api_client = kube.new_client_from_config(str(config.resolve(deployer.kubeconfig)),
                                                     context=deployer.context)
        else:
            try:
                kube.load_incluster_config()
            except kube.ConfigException:
                kube.load_kube_config(context=deployer.context)
            api_client = client.ApiClient()
    except (kube.ConfigException, OSError) as exc:
        raise DeployError(f"{model}: no Kubernetes credentials ({exc}); set deployer.kubeconfig") from exc
    watch_connections(api_client.rest_client.pool_manager)
    images = {name: v.image for name, v in spec.versions.items() if v.image}
    name = deployer.deployment or model
    return KubernetesDeployer(client.AppsV1Api(api_client), deployer.namespace, name,
                              deployer.container or name, images)


@deploys("vllm-lora", merged_weights=False, why_not="deployed as vLLM adapters; retraining makes merged "
         "weights, which that deployer cannot serve")
def _vllm_lora(config: Config, model: str) -> VllmLoraDeployer:
    spec = config.models[model]
    url = spec.deployer.url or spec.backend.base_url
    if not url or not spec.deployer.alias:
        raise DeployError(f"{model}: the vllm-lora deployer needs alias and url (or backend.base_url)")
    adapters = {name: str(config.resolve(version.path)) for name, version in spec.versions.items()
                if version.adapter and version.path}
    key = _secret(config, spec.deployer.api_key, f"models.{model}.deployer.api_key")
    source = spec.backend.key_source()
    if key is None and not spec.deployer.url and source:  # the backend's server: the backend's key
        key = _secret(config, source[0], f"models.{model}.backend.{source[1]}")
    return VllmLoraDeployer(Endpoint(url, api_key=key, max_retries=1), spec.deployer.alias, adapters)
