"""The policy file's schema: what an ML lead may write in forgetmenot.yaml.

Every model is strict (`extra="forbid"`): a misspelt key is an error, never a silently ignored
setting. Cross-field rules that need a precise location (a baseline that is not a version, a
suite directory that does not exist) live in `monitor.policy.loading`, which can point at the line.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    model_validator,
)

from monitor.errors import ConfigError, Problem
from monitor.policy import bounds
from monitor.redaction import remember


def parse_duration(value: object) -> object:
    """Accept '15m', '30s', '1h', '2d' or plain seconds, within `bounds.duration_seconds`'s range;
    anything else goes to pydantic as is."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value
    return timedelta(seconds=bounds.duration_seconds(value))


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Interval = Annotated[Duration, AfterValidator(bounds.interval)]
Timeout = Annotated[Duration, AfterValidator(bounds.timeout)]
# A model's or a version's name: it becomes part of file paths (the registry, retrained versions).
Name = Annotated[str, AfterValidator(bounds.safe_name)]
FileName = Annotated[str, AfterValidator(bounds.safe_file_name)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Action = Literal["alert", "rollback", "retrain"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _not_inline(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("a credential is never written in the policy: name where it is read, "
                         "{env: VARIABLE} or {file: PATH}")
    return value


class SecretSpec(Strict):
    """Where a credential is read when it is needed: an environment variable, or a file such as a
    mounted Kubernetes Secret. Never the credential itself: a policy file is reviewed, committed
    and shown in diffs. What is read is remembered by the redaction, so it is masked everywhere."""

    env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")] | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SecretSpec:
        if (self.env is None) == (self.file is None):
            raise ValueError("name exactly one of env or file")
        return self

    def read(self, base_dir: Path, source: str, key: str) -> str:
        """The credential, or a ConfigError naming the key and where it was looked for."""
        if self.env is not None:
            value = os.environ.get(self.env, "")
            where = f"environment variable {self.env}"
        else:
            path = Path(self.file or "").expanduser()
            path = path if path.is_absolute() else base_dir / path
            where = f"file {path}"
            try:
                value = bounds.read_capped(path, bounds.MAX_SECRET_BYTES)
            except OSError as exc:
                raise ConfigError([Problem(source, None, key, f"{where} cannot be read: "
                                           f"{exc.strerror or exc}")]) from exc
        value = value.strip()
        if not value:
            raise ConfigError([Problem(source, None, key, f"{where} is not set or empty")])
        return remember(value)


Secret = Annotated[SecretSpec, BeforeValidator(_not_inline)]


class Schedule(Strict):
    every: Interval | None = timedelta(minutes=15)
    cron: str | None = None
    jitter: Duration = timedelta(0)


class BackendSpec(Strict):
    """How versions are measured. For `openai`, `batch_size` is prompts per completions request,
    `dtype` records what the server runs (scores compare only within one dtype), and `tokenizer`
    names a local copy of the served tokenizer (else the server's /tokenize is used). In process,
    `generation_tokens` bounds the prompt and answer tokens generation keeps in flight: it answers
    as many prompts at once as that holds, at least `batch_size`."""

    kind: Literal["transformers", "openai"] = "transformers"
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: Annotated[int, Field(gt=0)] = 16
    generation_tokens: Annotated[int, Field(gt=0)] = 8192
    base_url: str | None = None
    api_key: Secret | None = None
    api_key_env: str | None = None
    tokenizer: str | None = None
    prefix_token: Annotated[int, Field(ge=0)] | None = None
    concurrency: Annotated[int, Field(gt=0, le=256)] = 4
    timeout: Timeout = timedelta(seconds=120)
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3

    def key_source(self) -> tuple[SecretSpec, str] | None:
        """Where the server's API key is read, and the setting that says so: `api_key`, or the
        older `api_key_env`, shorthand for `api_key: {env: ...}`."""
        if self.api_key is not None:
            return self.api_key, "api_key"
        if self.api_key_env:
            return SecretSpec.model_construct(env=self.api_key_env), "api_key_env"
        return None


class VersionSpec(Strict):
    """Where a version's weights are: a transformers directory, a GGUF file, or a served name."""

    path: str | None = None
    gguf_file: FileName | None = None  # a file inside `path`, as a candidate's must be
    served_name: str | None = None
    adapter: str | None = None
    image: str | None = None
    description: str = ""


class DeployerSpec(Strict):
    """How live is moved. `path` is the registry's folder for `<model>.json` (default
    `<FORGETMENOT_HOME>/live`); `url` is the webhook's, or vLLM's (default: the backend's
    base_url); `alias` is the adapter name users call on vLLM, re-pointed at the live version.
    For `kubernetes`: the Deployment (default: the model's name) and container (default: the
    deployment's name) in `namespace`, reached through `kubeconfig` (default: in-cluster, then
    ~/.kube/config) and its `context`. `secret` signs every webhook body (HMAC-SHA256, see
    docs/security.md); `api_key` is vLLM's (default: the backend's)."""

    kind: Literal["registry", "vllm-lora", "kubernetes", "webhook"] = "registry"
    url: str | None = None
    path: str | None = None
    alias: str | None = None
    namespace: str = "default"
    deployment: str | None = None
    container: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    secret: Secret | None = None
    api_key: Secret | None = None


class RetrainSpec(Strict):
    """Recovery retraining (the `retrain` action): a LoRA on the failing capabilities' recovery
    splits, mixed with replay of the fine-tune's own data so the skill it was made for is kept.

    `answers: baseline` trains on the baseline's own answer wherever it got the item right (the
    gold target elsewhere): recovery restores the old behaviour. Examples are spent where the loss
    is: each round's are allocated over the failing suites by how many points each lost. When the
    gate rejects a round only because capabilities still fail with alignment loss, another round
    retrains from the same version with `round_examples` more for exactly those, up to
    `max_rounds` and `max_examples` in all. `replay` is a JSONL file of
    {"prompt", "answer"} lines (the fine-tune's training data, or a sample of it). The result
    becomes live only if every counted capability PASSes against the baseline and `target_suite`
    (the fine-tune's own task) loses at most `target_max_drop` against the version it was
    retrained from. `promote_when: no_worse` also accepts INCONCLUSIVE (a suite too small to show
    the tolerance) provided no capability FAILs or is MARGINAL and every retrained capability is
    confidently better than the version it replaces; otherwise it is kept for inspection and alerted.
    """

    max_examples: Annotated[int, Field(gt=0, le=10_000)] = 40
    round_examples: Annotated[int, Field(gt=0, le=10_000)] = 20
    max_rounds: Annotated[int, Field(gt=0, le=10)] = 3
    answers: Literal["baseline", "target"] = "baseline"
    replay: str | None = None
    replay_examples: Annotated[int, Field(ge=0)] = 20
    target_suite: str | None = None
    target_max_drop: Fraction = 0.05
    promote_when: Literal["pass", "no_worse"] = "pass"
    epochs: Annotated[int, Field(gt=0, le=100)] = 4
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1e-3
    rank: Annotated[int, Field(gt=0, le=256)] = 16
    alpha: Annotated[int, Field(gt=0)] = 32
    batch_size: Annotated[int, Field(gt=0)] = 8
    seed: Annotated[int, Field(ge=-(2**63), lt=2**64)] = 0  # torch.manual_seed's range, checked up front
    output: str | None = None

    def first_round(self) -> int:
        """Examples in round one: `round_examples`, or the whole budget where that is smaller."""
        return min(self.round_examples, self.max_examples)


class CandidatesSpec(Strict):
    """Versions registered at runtime (`POST /api/v1/models/{model}/candidates`, `forgetmenot
    candidate add`) to be judged before they take traffic. A candidate's weights are loaded by
    the monitor, so a path must sit under one of `roots` (default: the folders holding the
    policy's own version paths and retrain's output); `max` bounds how many one model keeps."""

    roots: list[str] = []
    max: Annotated[int, Field(ge=0, le=1000)] = 20


class Resources(Strict):
    """What one probe run or recovery retraining of a model asks the executor for. Ray reserves
    it for the task (a GPU asked for is pinned to it, `CUDA_VISIBLE_DEVICES` set) and queues the
    task until a node has it free; the local executor runs in this process and needs none of it.
    `memory` is bytes or a size (`16GiB`); `custom` names Ray custom resources (a node label such
    as `{"a100": 1}` keeps a model on nodes that have one)."""

    num_gpus: NonNegative = 0
    num_cpus: NonNegative = 1
    memory: ByteSize | None = None
    custom: dict[Name, NonNegative] = {}


class ModelSpec(Strict):
    backend: BackendSpec = BackendSpec()
    resources: Resources = Resources()
    versions: Annotated[dict[Name, VersionSpec], Field(min_length=1)]
    baseline: str
    live: str
    deployer: DeployerSpec = DeployerSpec()
    retrain: RetrainSpec = RetrainSpec()
    candidates: CandidatesSpec = CandidatesSpec()


class CapabilityPolicy(Strict):
    """Per-capability overrides; anything left out comes from `policy.defaults`."""

    max_drop: Fraction | None = None
    max_drop_nats: NonNegative | None = None
    min_score: Fraction | None = None
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] | None = None
    critical: bool = False
    muted: bool = False
    min_items: Annotated[int, Field(ge=1)] | None = None
    failure_limit: Annotated[int, Field(ge=0)] | None = None
    inconclusive_limit: Annotated[int, Field(ge=0)] | None = None
    consecutive_error_limit: Annotated[int, Field(ge=1)] | None = None
    on_knowledge_loss: list[Action] | None = None
    on_alignment_loss: list[Action] | None = None


class PolicyDefaults(Strict):
    """`max_drop` is a fraction of items (accuracy); `max_drop_nats` is the tolerance of
    `loglikelihood_rolling` in nats per token: two units, so two settings."""

    max_drop: Fraction = 0.05
    max_drop_nats: NonNegative = 0.05
    min_items: Annotated[int, Field(ge=1)] = 20
    min_score: Fraction | None = None
    confidence: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    failure_limit: Annotated[int, Field(ge=0)] = 1
    inconclusive_limit: Annotated[int, Field(ge=0)] = 3
    consecutive_error_limit: Annotated[int, Field(ge=1)] = 3


class Rules(Strict):
    """One capability's policy with every default filled in: what the judge applies."""

    max_drop: float
    max_drop_nats: float
    min_score: float | None
    confidence: float
    min_items: int
    critical: bool
    muted: bool
    failure_limit: int
    inconclusive_limit: int
    consecutive_error_limit: int
    on_knowledge_loss: list[Action]
    on_alignment_loss: list[Action]


class Guards(Strict):
    cooldown: Duration = timedelta(hours=1)
    max_actions_per_day: Annotated[int, Field(ge=0)] = 2
    dry_run: bool = False
    approval: Literal["auto", "manual"] = "auto"


class AlertmanagerSpec(Strict):
    """Where `alert` actions go (Alertmanager's v2 API), the bearer `token` it wants if it sits
    behind an authenticating proxy, and the monitor's public URL for links."""

    url: str
    token: Secret | None = None
    link_base: str | None = None
    resolve_after: Duration = timedelta(hours=4)


class ExecutorSpec(Strict):
    """Where probe runs and retraining run, and how many at once (docs/scale.md).

    In every kind, one monitor runs at most `max_runs` probe runs at once, at most `endpoint_runs`
    against one served endpoint (its base_url), so a slow or dead endpoint holds up only its own
    versions. `local` (the default) runs in-process models in this process, `device_runs` at once
    per device, retraining included. `ray` runs every in-process probe run as a Ray actor and every
    recovery retraining as a Ray task, each asking for its model's `resources`; the monitor keeps
    the schedule, the claims, the judging and the database, and results come back through Ray
    chunk by chunk. `address` is Ray's (`ray://head:10001`, `auto`; left out: `RAY_ADDRESS`, else
    a local Ray). A worker lost mid-run is replaced up to `max_retries` times per loaded version, its chunk
    measured again (scoring has no side effects); a run that waits longer than `start_timeout`
    for a worker is an error, never forgetting."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    namespace: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "forgetmenot"
    max_runs: Annotated[int, Field(gt=0, le=4096)] = 64
    endpoint_runs: Annotated[int, Field(gt=0, le=1024)] = 4
    device_runs: Annotated[int, Field(gt=0, le=64)] = 1
    start_timeout: Timeout = timedelta(minutes=10)
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2


class Policy(Strict):
    defaults: PolicyDefaults = PolicyDefaults()
    alertmanager: AlertmanagerSpec | None = None
    capabilities: dict[str, CapabilityPolicy] = {}
    on_knowledge_loss: list[Action] = ["alert", "rollback"]
    on_alignment_loss: list[Action] = ["alert", "retrain"]
    guards: Guards = Guards()

    def rules_for(self, capability: str) -> Rules:
        own = self.capabilities.get(capability, CapabilityPolicy())
        merged = self.defaults.model_dump()
        merged.update({k: v for k, v in own.model_dump().items() if v is not None})
        merged.setdefault("on_knowledge_loss", self.on_knowledge_loss)
        merged.setdefault("on_alignment_loss", self.on_alignment_loss)
        return Rules(**merged)


class Config(Strict):
    database: str = "sqlite:///forgetmenot.db"
    database_password: Secret | None = None
    spool: str | None = None
    schedule: Schedule = Schedule()
    executor: ExecutorSpec = ExecutorSpec()
    models: Annotated[dict[Name, ModelSpec], Field(min_length=1)]
    suites: Annotated[list[str], Field(min_length=1)]
    policy: Policy = Policy()
    _base_dir: Path = PrivateAttr(default=Path("."))
    _source: str = PrivateAttr(default="policy")

    @property
    def base_dir(self) -> Path:
        """Relative paths in the file are relative to the file, not to where you ran from."""
        return self._base_dir

    def resolve(self, relative: str) -> Path:
        path = Path(relative).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def secret(self, spec: SecretSpec, key: str) -> str:
        """The credential `spec` names; `key` says which setting asked, for the error."""
        return spec.read(self._base_dir, self._source, key)

    def database_url(self) -> str:
        """SQLite paths are made relative to the policy file, like every other path in it; the
        password, where there is one, comes from `database_password`."""
        prefix = "sqlite:///"
        if self.database.startswith(prefix) and not self.database.startswith(prefix + "/"):
            rest = self.database[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str(self.resolve(rest).resolve())
        if self.database_password is None:
            return self.database
        from sqlalchemy.engine import make_url

        password = self.secret(self.database_password, "database_password")
        return make_url(self.database).set(password=password).render_as_string(hide_password=False)
