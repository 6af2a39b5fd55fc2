"""From a policy's version to the backend that measures it: one builder per backend kind.

A new backend kind registers a builder with `@builds("kind")`; nothing else dispatches on the
kind, so adding one touches no if-chain.
"""

from __future__ import annotations

from collections.abc import Callable

from monitor.errors import BackendError, ConfigError
from monitor.policy.schema import Config
from monitor.probing.backends.base import Backend
from monitor.probing.weights import weights_dir
from monitor.vocabulary import ErrorKind

Builder = Callable[[Config, str, str], Backend]
BUILDERS: dict[str, Builder] = {}
ON_WORKERS = frozenset({"transformers"})  # kinds that hold a model, run where the executor says


def builds(kind: str) -> Callable[[Builder], Builder]:
    def register(builder: Builder) -> Builder:
        BUILDERS[kind] = builder
        return builder

    return register


def backend_for(config: Config, model: str, version: str) -> Backend:
    """Build the backend that measures `model`/`version` as the policy describes it: with the Ray
    executor an in-process model is measured on a Ray worker (a served one is only HTTP calls,
    made from here)."""
    kind = config.models[model].backend.kind
    if kind not in BUILDERS:
        raise BackendError(f"{model}: no backend of kind '{kind}' (known: {', '.join(BUILDERS)})",
                           kind=ErrorKind.CONFIG)
    if config.executor.kind == "ray" and kind in ON_WORKERS:
        from monitor.probing.remote import RemoteBackend

        return RemoteBackend(config, model, version)
    return BUILDERS[kind](config, model, version)


@builds("transformers")
def _in_process(config: Config, model: str, version: str) -> Backend:
    from monitor.probing.backends.transformers import TransformersBackend

    spec = config.models[model].backend
    return TransformersBackend.load(str(weights_dir(config, model, version)), device=spec.device,
                                    dtype=spec.dtype, batch_size=spec.batch_size,
                                    generation_tokens=spec.generation_tokens)


def served_name(config: Config, model: str, version: str) -> str:
    """The `model` field a server knows this version by: its LoRA adapter or its served name."""
    spec = config.models[model].versions[version]
    return spec.adapter or spec.served_name or version


@builds("openai")
def _served(config: Config, model: str, version: str) -> Backend:
    from monitor.probing.backends.endpoint import PER_PROMPT, Endpoint
    from monitor.probing.backends.openai import OpenAIBackend
    from monitor.probing.backends.tokens import LocalTokenizer, ServerTokenizer, Tokenizer

    spec = config.models[model].backend
    if not spec.base_url:
        raise BackendError(f"{model}: the openai backend needs base_url", kind=ErrorKind.CONFIG)
    largest = spec.batch_size * PER_PROMPT  # a whole batch's echoed log-probabilities
    endpoint = Endpoint(spec.base_url, api_key=_api_key(config, model),
                        timeout_s=spec.timeout.total_seconds(), max_retries=spec.max_retries,
                        concurrency=spec.concurrency, shared=spec.concurrency * config.executor.endpoint_runs,
                        max_bytes=largest)
    name = served_name(config, model, version)
    tokenizer: Tokenizer = (LocalTokenizer(str(config.resolve(spec.tokenizer))) if spec.tokenizer
                            else ServerTokenizer(endpoint, name, spec.prefix_token))
    return OpenAIBackend(endpoint, tokenizer, model=name, batch_size=spec.batch_size, dtype=spec.dtype)


def _api_key(config: Config, model: str) -> str | None:
    source = config.models[model].backend.key_source()
    if source is None:
        return None
    spec, setting = source
    try:
        return config.secret(spec, f"models.{model}.backend.{setting}")
    except ConfigError as exc:
        raise BackendError(str(exc), kind=ErrorKind.CONFIG) from exc
