"""The slim image probing a real model server: `transformers serve` with SmolLM2 on the host's
loopback, the container hardened as in production (read-only root, uid 10001, no capabilities).
Run by `make image-test` after container/test.sh; prints the probe's table and how long it took.

    .venv/bin/python container/probe_real_server.py [IMAGE]   (default localhost/forgetmenot:slim)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from monitor.probing.weights import prepare_smollm2
from monitor.testing.servers import transformers_server

HERE = Path(__file__).resolve().parent
HARDENED = ["--read-only", "--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--no-healthcheck", "--network", "host"]


def engine_env(image: str) -> dict[str, str]:
    """podman's defaults, or the sandbox settings where they cannot start a container here."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env and subprocess.run(
            ["podman", "run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image, "-c", "true"],
            capture_output=True).returncode != 0:
        env["CONTAINERS_CONF"] = str(HERE / "containers-sandbox.conf")
    return env


def main(image: str) -> int:
    model = prepare_smollm2()
    env = engine_env(image)
    with tempfile.TemporaryDirectory() as work, transformers_server(model, Path(work)) as server:
        etc = Path(work) / "etc"
        etc.mkdir()
        (etc / "forgetmenot.yaml").write_text(f"""\
database: sqlite:////var/lib/forgetmenot/forgetmenot.db
spool: /var/lib/forgetmenot/spool
models:
  served-bot:
    backend: {{kind: openai, base_url: "{server.base_url}", dtype: float32, timeout: 60s, batch_size: 8}}
    versions:
      v1: {{served_name: "{model}"}}
    baseline: v1
    live: v1
suites: [/app/probes/instruction-format]
""")
        volume = f"fmn-real-{os.getpid()}"
        began = time.monotonic()
        try:
            done = subprocess.run(["podman", "run", "--rm", *HARDENED, "-v", f"{volume}:/var/lib/forgetmenot",
                                   "-v", f"{etc}:/etc/forgetmenot:ro", "-e", "COLUMNS=160", image, "probe",
                                   "-c", "/etc/forgetmenot/forgetmenot.yaml"], env=env, text=True)
        finally:
            subprocess.run(["podman", "volume", "rm", "-f", volume], env=env, capture_output=True)
    print(f"probe in {image} against transformers serve: exit {done.returncode}, "
          f"{time.monotonic() - began:.0f} s")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "localhost/forgetmenot:slim"))
