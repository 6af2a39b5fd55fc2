"""A PostgreSQL server of its own, in a temporary folder, that a harness may kill and restart.

The fault matrix kills the database mid-run; doing that to the machine's shared server would harm
everything else on it. Debian's `initdb` and `pg_ctl` make a throwaway cluster on a free loopback
port instead. PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
user and its commands run through `runuser`.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from monitor.testing.stack import free_port


@contextmanager
def scratch_database(admin_url: str, prefix: str = "fmn_") -> Iterator[str]:
    """A fresh database on an existing PostgreSQL server (the URL of one it already has), dropped
    afterwards even if connections are still open: its URL. For tests and benchmarks that need a
    real server but must leave nothing behind on it."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.rsplit("/", 1)[0] + "/" + name
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                                                   reverse=True)), None)
    if not found:
        raise FileNotFoundError(f"{name} is not installed (Debian: postgresql)")
    return found


@dataclass
class TempPostgres:
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def init(self) -> TempPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        return self

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c timezone=UTC")
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                  "-w", "-t", "60", "start")

    def kill(self) -> None:
        """As a crash would: no checkpoint, every connection cut."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create(self, database: str) -> str:
        self._run(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database)
        return self.url(database)


@contextmanager
def temp_postgres() -> Iterator[TempPostgres]:
    with tempfile.TemporaryDirectory(prefix="fmn-pg-") as tmp:
        os.chmod(tmp, 0o755)  # the postgres user must reach its folder inside
        server = TempPostgres(Path(tmp) / "pg", free_port()).init()
        server.start()
        try:
            yield server
        finally:
            with suppress(subprocess.CalledProcessError):  # already down: a fault left it so
                server.stop()
