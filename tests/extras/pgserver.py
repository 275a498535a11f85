"""A throwaway PostgreSQL server on loopback, for the scale-out tests and benchmark."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


def bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Postgres:
    url: str  # no password in it: clients read PGPASSWORD from env
    password: str
    env: dict
    _ctl: list = field(repr=False)
    _start: list = field(repr=False)
    base: Path = field(repr=False)

    def start(self) -> None:
        # The server outlives single tests (one per test module): it does not carry the tests' process mark.
        quiet = {k: v for k, v in os.environ.items() if k != "SWEEP_TEST_PROCESS"}
        subprocess.run([*self._ctl, *self._start, "start"], check=True, capture_output=True, env=quiet)

    def stop(self, mode: str = "fast") -> None:
        subprocess.run([*self._ctl, "-m", mode, "stop"], check=True, capture_output=True)

    def remove(self) -> None:
        subprocess.run([*self._ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)


def start_postgres() -> Postgres:
    """initdb + start on a free loopback port, with password authentication and a database `sweep`."""
    binaries = bindir()
    assert binaries is not None, "PostgreSQL is not installed"
    base = Path(tempfile.mkdtemp(prefix="sweep-pg-"))  # world-traversable: the postgres user must reach it
    os.chmod(base, 0o777)
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    password = "pw-" + secrets.token_hex(8)
    (base / "pw").write_text(password)
    os.chmod(base / "pw", 0o644)
    subprocess.run([*as_owner, binaries / "initdb", "-D", base / "data", "-U", "sweep", "--auth=scram-sha-256",
                    f"--pwfile={base / 'pw'}"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctl = [*as_owner, binaries / "pg_ctl", "-D", base / "data", "-l", base / "log", "-w"]
    server = Postgres(f"postgresql://sweep@127.0.0.1:{port}/sweep", password, {"PGPASSWORD": password}, ctl,
                      ["-o", f"-p {port} -k {base} -c listen_addresses=127.0.0.1"], base)
    server.start()
    subprocess.run([binaries / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "sweep", "sweep"],
                   check=True, env={**os.environ, **server.env}, capture_output=True)
    return server
