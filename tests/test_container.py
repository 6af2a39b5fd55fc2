"""The container image (Containerfile, container/, docs/container.md).

Fast, no image built: the Containerfile's stages, user, volumes and entrypoint are read and
checked against the CLI; the entrypoint and healthcheck scripts run; the scripted OpenAI server
and the test policy work. Marked `container`: the image's install step (container/install.sh)
into a clean virtualenv, about a minute. Opt-in: with FORGETMENOT_IMAGE naming a built image
(container/test.sh, `make image-test`), the image runs for real: validate, probe against the
scripted server and serve's /healthz, read-only, as uid 10001, with no capabilities.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from monitor.errors import IMAGE_FLAVOR_ENV
from monitor.testing.stack import free_port
from tests.conftest import REPO

CONTAINERFILE = REPO / "Containerfile"
CONTAINER = REPO / "container"
ENTRYPOINT = CONTAINER / "entrypoint.sh"
HEALTHCHECK = CONTAINER / "healthcheck.py"
TEST_POLICY = CONTAINER / "test-policy.yaml"
STATE = "/var/lib/forgetmenot"
CONFIG = "/etc/forgetmenot/forgetmenot.yaml"
SERVE_CMD = ["serve", "--config", CONFIG, "--host", "0.0.0.0"]

# -- reading the Containerfile -----------------------------------------------------------


def instructions(path: Path = CONTAINERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = (pending + line).strip()
        pending = ""
        word, _, rest = whole.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The build stages, each from its FROM; what precedes the first FROM is stage -1's (ARGs)."""
    found: list[list[tuple[str, str]]] = []
    for word, rest in instructions():
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
    return found


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def serve_command() -> Any:
    import typer

    from monitor.cli.app import app

    return typer.main.get_command(app).commands["serve"]  # type: ignore[attr-defined]


def test_two_stages_from_one_base_with_a_flavor_argument() -> None:
    word, rest = instructions()[0]
    assert word == "ARG" and rest.startswith("BASE="), "ARG BASE comes first, for both FROMs"
    builder, final = stages()
    assert builder[0][1] == "${BASE} AS builder" and final[0][1] == "${BASE}"
    args = {r.split("=")[0] for w, r in builder if w == "ARG"}
    assert {"FLAVOR", "EXTRAS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"} <= args
    assert ("ARG", "FLAVOR=slim") in builder and ("ARG", "FLAVOR=slim") in final
    runs = [r for w, r in builder if w == "RUN"]
    assert len(runs) == 1 and "container/install.sh /src /opt/forgetmenot \"$FLAVOR\" \"$EXTRAS\"" in runs[0]
    assert "--mount=type=secret,id=pip_cert" in runs[0], "the CA bundle is a secret, never a layer"


def test_the_final_stage_copies_the_venv_and_the_shipped_files() -> None:
    final = stages()[-1]
    copies = [r for w, r in final if w == "COPY"]
    assert "--from=builder /opt/forgetmenot /opt/forgetmenot" in copies
    for folder in ("probes", "alerts", "dashboards"):
        assert f"{folder} /app/{folder}" in copies
        assert (REPO / folder).is_dir()
    for _, rest in [(w, r) for stage in stages() for w, r in stage if w == "COPY"]:
        if rest.startswith("--from="):
            continue
        sources = [p for p in rest.split()[:-1] if not p.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


def test_runs_as_a_numeric_non_root_user_and_writes_nothing_after() -> None:
    final = stages()[-1]
    words = [w for w, _ in final]
    users = [r for w, r in final if w == "USER"]
    assert users == ["10001:10001"], "one USER, numeric (runAsNonRoot can check it), not root"
    after = words[words.index("USER") + 1 :]
    # Nothing after USER runs or writes into the image: only metadata.
    assert set(after) <= {"WORKDIR", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD", "LABEL",
                          "ENV", "STOPSIGNAL"}, after
    run = next(r for w, r in final if w == "RUN")
    assert "--uid 10001" in run and "--gid 10001" in run
    assert f"install -d -o 10001 -g 10001 -m 0750 {STATE}" in run


def test_everything_written_is_on_the_volume() -> None:
    final = stages()[-1]
    volumes = [exec_form(r) for w, r in final if w == "VOLUME"]
    assert volumes == [[STATE]]
    env = " ".join(r for w, r in final if w == "ENV")
    for var in ("FORGETMENOT_HOME", "HOME", "HF_HOME", "XDG_CACHE_HOME"):
        value = re.search(rf"\b{var}=(\S+)", env)
        assert value and value.group(1).startswith(STATE), var
    assert "TMPDIR=/tmp" in env and "PYTHONDONTWRITEBYTECODE=1" in env
    workdirs = [r for w, r in final if w == "WORKDIR"]
    assert workdirs[-1] == STATE
    policy = TEST_POLICY.read_text()
    assert f"sqlite:///{STATE}/" in policy and f"spool: {STATE}/" in policy


def test_the_image_names_its_flavor_for_advice_about_missing_extras() -> None:
    """Inside the image nothing can be pip-installed: the monitor reads the flavor the image sets
    and names the build that has a missing extra. Neither flavour installs `report` unless asked."""
    final = stages()[-1]
    env = " ".join(r for w, r in final if w == "ENV")
    assert re.search(rf"\b{IMAGE_FLAVOR_ENV}=\$\{{FLAVOR\}}", env)
    assert "ARG FLAVOR=slim" in [f"{w} {r}" for w, r in final]
    install = (REPO / "container" / "install.sh").read_text()
    assert "report" not in " ".join(re.findall(r"(?m)^\s*(?:slim|model)\) extras=.*$", install))


def test_entrypoint_cmd_port_and_healthcheck_match_the_cli() -> None:
    final = stages()[-1]
    (entrypoint,) = [exec_form(r) for w, r in final if w == "ENTRYPOINT"]
    (cmd,) = [exec_form(r) for w, r in final if w == "CMD"]
    assert entrypoint == ["/usr/local/bin/forgetmenot-entrypoint"]
    assert "COPY container/entrypoint.sh /usr/local/bin/forgetmenot-entrypoint" in [
        f"{w} {r}" for w, r in final]
    assert cmd == SERVE_CMD
    serve = serve_command()
    options = {opt: p for p in serve.params for opt in p.opts}
    assert {"--config", "--host", "--port"} <= options.keys()
    (exposed,) = [r for w, r in final if w == "EXPOSE"]
    assert int(exposed) == options["--port"].default == 9464
    (health,) = [r for w, r in final if w == "HEALTHCHECK"]
    probe = exec_form(health.split(" CMD ", 1)[1])
    assert probe == ["/opt/forgetmenot/bin/python", "/usr/local/bin/forgetmenot-healthcheck"]
    labels = " ".join(r for w, r in final if w == "LABEL")
    assert 'org.opencontainers.image.title="forgetmenot"' in labels
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M)
    assert version and ("ARG", f"VERSION={version.group(1)}") in final


def test_the_build_context_holds_what_is_copied_and_nothing_else() -> None:
    lines = [x.strip() for x in (REPO / ".containerignore").read_text().splitlines()]
    patterns = [x for x in lines if x and not x.startswith("#")]
    assert patterns[0] == "*", "everything is excluded, then what is copied is let back in"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {src for stage in stages() for w, r in stage if w == "COPY"
              for src in r.split()[:-1] if not src.startswith("--")}
    assert copied - {"/opt/forgetmenot"} <= allowed | {"pyproject.toml"}
    assert allowed <= copied | {"pyproject.toml"}


# -- the scripts ---------------------------------------------------------------------------


@pytest.fixture()
def fake_cli(tmp_path: Path) -> dict[str, str]:
    """A PATH whose `forgetmenot` prints its arguments, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "forgetmenot"
    fake.write_text('#!/bin/sh\necho "home=$FORGETMENOT_HOME"\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    home = tmp_path / "state"
    home.mkdir()
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FORGETMENOT_HOME": str(home)}


def entrypoint(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True,
                          timeout=30, check=False)


@pytest.mark.parametrize(("args", "expected"), [
    ((), SERVE_CMD),
    (("--port", "9000"), [*SERVE_CMD, "--port", "9000"]),
    (("validate", "-c", "/p.yaml"), ["validate", "-c", "/p.yaml"]),
    (("--help",), ["--help"]),
    (("probe", "--suite", "refusal"), ["probe", "--suite", "refusal"]),
    (("forgetmenot", "validate"), ["validate"]),
])
def test_the_entrypoint_runs_forgetmenot(fake_cli: dict[str, str], args: tuple[str, ...],
                                         expected: list[str]) -> None:
    done = entrypoint(fake_cli, *args)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"home={fake_cli['FORGETMENOT_HOME']}"
    assert lines[1:] == expected
    assert done.stderr == ""


def test_the_entrypoint_defaults_home_and_runs_a_shell_as_given(fake_cli: dict[str, str]) -> None:
    env = {"PATH": fake_cli["PATH"]}
    done = entrypoint(env, "sh", "-c", 'echo "shell $FORGETMENOT_HOME"')
    assert done.stdout.strip() == "shell /var/lib/forgetmenot"
    # Not writable here (no such folder): said, not fatal.
    assert "/var/lib/forgetmenot is not writable" in done.stderr and done.returncode == 0


def test_the_entrypoint_is_executable_posix_sh() -> None:
    assert ENTRYPOINT.stat().st_mode & stat.S_IXUSR
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    for script in (ENTRYPOINT, CONTAINER / "install.sh", CONTAINER / "build.sh", CONTAINER / "test.sh"):
        subprocess.run(["sh", "-n", str(script)], check=True)
    if shutil.which("dash"):
        subprocess.run(["dash", "-n", str(ENTRYPOINT)], check=True)


def test_the_healthcheck_says_whether_healthz_answers() -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 503)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def check(url: str) -> int:
            env = {**os.environ, "FORGETMENOT_HEALTHCHECK_URL": url}
            return subprocess.run([sys.executable, str(HEALTHCHECK)], env=env, capture_output=True,
                                  timeout=30, check=False).returncode

        port = server.server_port
        assert check(f"http://127.0.0.1:{port}/healthz") == 0
        assert check(f"http://127.0.0.1:{port}/other") == 1
        assert check(f"http://127.0.0.1:{free_port()}/healthz") == 1
    finally:
        server.shutdown()
        server.server_close()


def load_fake_openai() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fake_openai", CONTAINER / "fake_openai.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def fake_openai() -> Iterator[str]:
    """The scripted OpenAI-compatible server on a free loopback port: its /v1 URL."""
    server = load_fake_openai().make_server(0, "served-bot")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def host_policy(tmp_path: Path, base_url: str) -> Path:
    """The image tests' policy with this checkout's paths in place of the image's."""
    text = (TEST_POLICY.read_text().replace("__BASE_URL__", base_url)
            .replace("/app/probes", str(REPO / "probes")).replace(STATE, str(tmp_path / "state")))
    (tmp_path / "state").mkdir(exist_ok=True)
    path = tmp_path / "forgetmenot.yaml"
    path.write_text(text)
    return path


def test_the_test_policy_probes_through_the_scripted_server(tmp_path: Path, fake_openai: str) -> None:
    """What the image test runs in the container, here: the policy and the server stay usable."""
    policy = host_policy(tmp_path, fake_openai)
    env = {**os.environ, "FORGETMENOT_HOME": str(tmp_path / "state"), "COLUMNS": "200"}
    cli = [sys.executable, "-m", "monitor.cli.app"]
    subprocess.run([*cli, "validate", "-c", str(policy)], env=env, check=True, capture_output=True,
                   timeout=120)
    done = subprocess.run([*cli, "probe", "-c", str(policy), "--suite", "refusal"], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "complete" in done.stdout
    stats = json.loads(urllib.request.urlopen(fake_openai.removesuffix("/v1") + "/stats").read())
    assert stats["/v1/chat/completions"] > 0


# -- the image's install step, in a clean virtualenv ---------------------------------------


@pytest.mark.container
@pytest.mark.timeout(900)
def test_the_slim_install_step_works_in_a_clean_virtualenv(tmp_path: Path) -> None:
    """container/install.sh exactly as the builder stage runs it, on what the build copies."""
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "constraints.txt", "container/install.sh"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "monitor", src / "monitor",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    venv = tmp_path / "opt-forgetmenot"
    python = shutil.which("python3.11") or sys.executable
    done = subprocess.run(["sh", str(src / "container/install.sh"), str(src), str(venv), "slim"],
                          env={**os.environ, "PYTHON": python}, capture_output=True, text=True,
                          timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    bin_dir = venv / "bin"
    assert subprocess.run([bin_dir / "python", "-c", "import torch"], capture_output=True,
                          check=False).returncode != 0, "slim must not pull in torch"
    listed = subprocess.run([bin_dir / "python", "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"forgetmenot", "psycopg", "kubernetes"} <= names
    assert not names & {"torch", "transformers", "peft", "accelerate"}
    # Installed as a wheel, not a link to this checkout.
    where = subprocess.run([bin_dir / "python", "-c", "import monitor; print(monitor.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert str(venv) in where
    subprocess.run([bin_dir / "forgetmenot", "--help"], check=True, capture_output=True)
    policy = host_policy(tmp_path, "http://127.0.0.1:9/v1")
    done = subprocess.run([bin_dir / "forgetmenot", "validate", "-c", str(policy)], capture_output=True,
                          text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr
    # The migrations ship in the wheel: the schema can be made from it.
    subprocess.run([bin_dir / "forgetmenot", "db", "upgrade", "-c", str(policy)], check=True,
                   capture_output=True, cwd=tmp_path)


# -- a built image, for real (opt-in) -------------------------------------------------------

IMAGE = os.environ.get("FORGETMENOT_IMAGE")
needs_image = pytest.mark.skipif(not IMAGE, reason="set FORGETMENOT_IMAGE to a built image "
                                                    "(container/build.sh; make image-test)")
SANDBOX_CONF = CONTAINER / "containers-sandbox.conf"


def engine() -> str:
    chosen = os.environ.get("FORGETMENOT_CONTAINER_ENGINE") or (
        "podman" if shutil.which("podman") else "docker")
    return chosen


@pytest.fixture(scope="module")
def engine_env() -> dict[str, str]:
    """The environment the engine runs in: podman's defaults, or, where they fail (a sandbox:
    hybrid cgroups, no CAP_SYS_RESOURCE), container/containers-sandbox.conf."""
    env = dict(os.environ)
    if engine() != "podman" or "CONTAINERS_CONF" in env:
        return env
    trial = subprocess.run(["podman", "run", "--rm", "--network", "none", "--no-healthcheck", str(IMAGE),
                            "--help"], capture_output=True, text=True, env=env, timeout=300, check=False)
    if trial.returncode != 0:
        env["CONTAINERS_CONF"] = str(SANDBOX_CONF)
    return env


def hardened(volume: str, etc: Path) -> list[str]:
    """How the image runs in production: read-only, unprivileged, state on a volume."""
    return ["--read-only", "--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--network", "host",
            "-v", f"{volume}:{STATE}", "-v", f"{etc}:/etc/forgetmenot:ro"]


@pytest.fixture()
def deployment(tmp_path: Path, fake_openai: str, engine_env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A fresh state volume and the policy (pointing at the scripted server), mounted read-only."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "forgetmenot.yaml").write_text(TEST_POLICY.read_text().replace("__BASE_URL__", fake_openai))
    etc.chmod(0o755)
    (etc / "forgetmenot.yaml").chmod(0o644)
    volume = f"forgetmenot-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([engine(), "volume", "create", volume], env=engine_env, check=True, capture_output=True)
    names: list[str] = []
    try:
        yield {"volume": volume, "etc": etc, "url": fake_openai, "env": engine_env, "names": names}
    finally:
        for name in names:
            subprocess.run([engine(), "rm", "-f", name], env=engine_env, capture_output=True, check=False)
        subprocess.run([engine(), "volume", "rm", "-f", volume], env=engine_env, capture_output=True,
                       check=False)


def run(deployment: dict[str, Any], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    command = [engine(), "run", "--rm", *hardened(deployment["volume"], deployment["etc"])]
    if engine() == "podman":
        command.append("--no-healthcheck")  # one-shot commands; podman's timers need systemd
    command += ["-e", "COLUMNS=200", str(IMAGE), *args]
    return subprocess.run(command, env=deployment["env"], capture_output=True, text=True,
                          timeout=timeout, check=False)


@needs_image
def test_image_config_is_non_root_with_the_serve_command(engine_env: dict[str, str]) -> None:
    raw = subprocess.run([engine(), "image", "inspect", str(IMAGE)], env=engine_env, capture_output=True,
                         text=True, check=True).stdout
    config = json.loads(raw)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/usr/local/bin/forgetmenot-entrypoint"]
    assert config["Cmd"] == SERVE_CMD
    assert STATE in config["Volumes"] and "9464/tcp" in config["ExposedPorts"]
    assert config["Labels"]["org.opencontainers.image.title"] == "forgetmenot"


@needs_image
def test_image_validates_and_probes_read_only(deployment: dict[str, Any]) -> None:
    done = run(deployment, "validate", "-c", CONFIG)
    assert done.returncode == 0 and "ok /etc/forgetmenot/forgetmenot.yaml" in done.stdout, done.stderr
    done = run(deployment, "probe", "-c", CONFIG, "--suite", "refusal")
    assert done.returncode == 0, done.stdout + done.stderr
    row = re.search(r"v1\W+refusal\W+generate\w*\W+[\d.]+%\W+(\d+)\W+(\d+)\W+(\w+)", done.stdout)
    assert row and int(row[1]) > 0 and row[2] == "0" and row[3] == "complete", done.stdout
    stats = json.loads(urllib.request.urlopen(deployment["url"].removesuffix("/v1") + "/stats").read())
    assert stats["/v1/chat/completions"] > 0
    # What it wrote is on the volume, owned by 10001; the rest of the filesystem refused writes.
    done = run(deployment, "sh", "-c", f"ls -ln {STATE}; touch /opt/x /etc/x /app/x 2>&1; touch /tmp/x "
                                       "&& echo tmp-ok")
    assert re.search(r"10001\s+10001\s+\d+ .* forgetmenot\.db", done.stdout), done.stdout
    assert done.stdout.count("Read-only file system") == 3 and "tmp-ok" in done.stdout


@needs_image
def test_image_serves_healthz_hardened(deployment: dict[str, Any]) -> None:
    port = free_port()
    name = f"forgetmenot-serve-{uuid.uuid4().hex[:8]}"
    deployment["names"].append(name)
    env = deployment["env"]
    command = [engine(), "run", "-d", "--name", name, *hardened(deployment["volume"], deployment["etc"]),
               "-e", f"FORGETMENOT_HEALTHCHECK_URL=http://127.0.0.1:{port}/healthz",
               str(IMAGE), "--host", "127.0.0.1", "--port", str(port)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    url = f"http://127.0.0.1:{port}"
    started, body = time.monotonic(), None
    while time.monotonic() - started < 120 and body is None:
        try:
            body = urllib.request.urlopen(f"{url}/healthz", timeout=2).read()
        except OSError:
            time.sleep(0.25)
    logs = subprocess.run([engine(), "logs", name], env=env, capture_output=True, text=True).stdout
    assert body is not None, f"/healthz never answered; logs:\n{logs}"
    assert json.loads(body) == {"status": "ok"}
    timings = []
    for _ in range(20):
        t0 = time.perf_counter()
        assert urllib.request.urlopen(f"{url}/healthz", timeout=5).status == 200
        timings.append(time.perf_counter() - t0)
    timings.sort()
    print(f"\n{IMAGE}: /healthz first answer {time.monotonic() - started:.1f}s after start; "
          f"latency median {timings[10] * 1000:.2f} ms, max {timings[-1] * 1000:.2f} ms")
    assert urllib.request.urlopen(f"{url}/readyz", timeout=5).status == 200
    # What the process runs as, inside.
    inside = subprocess.run([engine(), "exec", name, "sh", "-c",
                             "id -u; id -g; grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/1/status; "
                             "tr '\\0' ' ' < /proc/1/cmdline"],
                            env=env, capture_output=True, text=True, check=True).stdout
    lines = inside.splitlines()
    assert lines[:2] == ["10001", "10001"]
    assert re.search(r"CapEff:\s+0+$", inside, re.M) and re.search(r"CapBnd:\s+0+$", inside, re.M)
    assert re.search(r"NoNewPrivs:\s+1$", inside, re.M)
    assert "/opt/forgetmenot/bin/forgetmenot serve" in lines[-1], "serve is PID 1 (exec'd)"
    state = json.loads(subprocess.run([engine(), "inspect", name], env=env, capture_output=True,
                                      text=True, check=True).stdout)[0]
    host_config = state["HostConfig"]
    assert host_config["ReadonlyRootfs"] is True
    if engine() == "podman":  # the HEALTHCHECK, run once by hand (its timer needs systemd)
        subprocess.run(["podman", "healthcheck", "run", name], env=env, check=True, capture_output=True)
    # SIGTERM stops it cleanly, well inside the grace period.
    t0 = time.monotonic()
    subprocess.run([engine(), "stop", "-t", "30", name], env=env, check=True, capture_output=True)
    assert time.monotonic() - t0 < 20
    code = subprocess.run([engine(), "inspect", name, "--format", "{{.State.ExitCode}}"], env=env,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert code == "0", subprocess.run([engine(), "logs", name], env=env, capture_output=True,
                                       text=True).stdout



@needs_image
def test_image_model_flavour_probes_in_process(tmp_path: Path, engine_env: dict[str, str]) -> None:
    """The model flavour's torch stack, read-only and offline: SmolLM2 (a transformers folder from
    `forgetmenot model prepare smollm2`, named by FORGETMENOT_TEST_MODEL_DIR) on CPU."""
    labels = json.loads(subprocess.run([engine(), "image", "inspect", str(IMAGE)], env=engine_env,
                                       capture_output=True, text=True, check=True).stdout)[0]
    if labels["Config"]["Labels"].get("io.forgetmenot.flavor") != "model":
        pytest.skip("not the model flavour")
    model_dir = os.environ.get("FORGETMENOT_TEST_MODEL_DIR")
    if not model_dir or not (Path(model_dir) / "config.json").is_file():
        pytest.skip("set FORGETMENOT_TEST_MODEL_DIR to a prepared SmolLM2 folder (container/test.sh does)")
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(CONTAINER / "test-policy-model.yaml", etc / "forgetmenot.yaml")
    volume = f"forgetmenot-test-{uuid.uuid4().hex[:8]}"
    subprocess.run([engine(), "volume", "create", volume], env=engine_env, check=True, capture_output=True)
    try:
        flags = [f if f != "host" else "none" for f in hardened(volume, etc)]  # no network at all
        command = [engine(), "run", "--rm", *flags, "-v", f"{model_dir}:/models/smollm2:ro",
                   "-e", "COLUMNS=200", *(["--no-healthcheck"] if engine() == "podman" else []),
                   str(IMAGE), "probe", "-c", CONFIG, "--kind", "multiple_choice"]
        done = subprocess.run(command, env=engine_env, capture_output=True, text=True, timeout=900,
                              check=False)
    finally:
        subprocess.run([engine(), "volume", "rm", "-f", volume], env=engine_env, capture_output=True,
                       check=False)
    row = re.search(r"arithmetic\W+multiple_choice\W+([\d.]+)%\W+(\d+)\W+(\d+)\W+(\w+)", done.stdout)
    assert done.returncode == 0 and row, done.stdout + done.stderr
    assert int(row[2]) > 0 and row[3] == "0" and row[4] == "complete", done.stdout
