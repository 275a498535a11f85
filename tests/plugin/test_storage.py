"""Storage URLs and secrets, judged on the parsed URL: a password is absent or exactly one ${oc.env:VAR}; what is
printed or saved never holds it; and a URL read from a sweep folder is never connected to."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path

import optuna
import pytest

from helpers import assert_one_line_error, run_app, run_cli
from sweep.sweeper import storage as st
from sweep.errors import UserError

SECRET = "S3cr@t/pa:ss%41"


@pytest.mark.parametrize("url", [
    f"postgresql://u:{SECRET}@h/db",
    "postgresql://u:S3cret@h/db",
    "postgresql://u@h/db?password=S3cret",
    "postgresql://u:${oc.env:UNSET_VAR,S3cret}@h/db",  # a literal default is a literal password
    "postgresql://${oc.env:USER}:S3cret@h/db",  # a reference elsewhere does not make the password one
    "sqlite:///x.db?password=S3cret",
])
def test_a_literal_password_is_refused_and_never_printed(url):
    with pytest.raises(UserError) as e:
        st.parse(url)
    assert "holds a password" in str(e.value) and "S3cret" not in str(e.value) and "S3cr" not in str(e.value)


def test_a_password_from_the_environment_may_hold_any_character(monkeypatch):
    monkeypatch.setenv("DB_PW", SECRET)
    spec = st.parse("postgresql://u:${oc.env:DB_PW}@h:5432/db?sslmode=require")
    assert spec.shown == "postgresql://u:***@h:5432/db?sslmode=require" and spec.saved.count("${oc.env:DB_PW}") == 1
    from sqlalchemy.engine import make_url

    url = make_url(spec.url)
    assert (url.password, url.host, url.port, url.database) == (SECRET, "h", 5432, "db")
    message = spec.redact(f"could not connect to {spec.url} nor postgresql://u:{SECRET}@h/db")
    assert SECRET not in message and "pa:ss" not in message and "t/pa" not in message
    monkeypatch.delenv("DB_PW")
    with pytest.raises(UserError, match=re.escape("which does not set DB_PW here")):
        st.parse("postgresql://u:${oc.env:DB_PW}@h/db")


def test_redact_masks_a_whole_password_even_when_it_did_not_parse():
    text = st.redact("postgresql://u:ab@cd/ef:gh@host/db?password=zz&sslmode=on and sqlite:///a.db")
    assert "ab" not in text.split("://")[1].split("***")[0] and "cd/ef" not in text and "zz" not in text
    assert "sslmode=on" in text and "sqlite:///a.db" in text


class Listener:
    """A stranger's host: a TCP port that notes whether anyone connected."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port, self.connections, self.stop = self.sock.getsockname()[1], 0, threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.mark.parametrize("password", ["${oc.env:CLOUD_TOKEN}", ""])
def test_a_hostile_sweep_folder_sends_no_secret_anywhere(tmp_path, password):
    listener = Listener()
    try:
        folder = tmp_path / "shared-sweep"
        folder.mkdir()
        user = f"x:{password}" if password else "x"
        (folder / "study.json").write_text(json.dumps({
            "storage": f"postgresql://{user}@127.0.0.1:{listener.port}/db", "study_name": "s",
            "directions": ["maximize"]}))
        env = {"CLOUD_TOKEN": "tok-123", "PGPASSWORD": "pg-456"}
        result = run_cli("sweep.report", str(folder), cwd=tmp_path, env=env)
        assert_one_line_error(result, "a sweep folder never decides where this command connects",
                              f"--storage 'postgresql://x@127.0.0.1:{listener.port}/db'")
        assert "tok-123" not in result.stdout + result.stderr and listener.connections == 0
    finally:
        listener.close()


def test_a_literal_password_on_the_command_line_is_refused_and_never_saved(tmp_path):
    url = "postgresql://sweep@127.0.0.1:9/sweep?password=S3cret"
    result = run_app("--multirun", f"hydra.sweeper.storage='{url}'", cwd=tmp_path)
    assert_one_line_error(result, "holds a password", "PGPASSWORD")
    assert "S3cret" not in result.stdout + result.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and b"S3cret" in p.read_bytes()]
    report = run_cli("sweep.report", "--storage", "postgresql://u:S3cret@127.0.0.1:9/db", "--study", "nosuch",
                     cwd=tmp_path)
    assert_one_line_error(report, "--storage")
    assert "S3cret" not in report.stdout + report.stderr


def test_the_saved_study_record_is_data_not_a_url_to_trust(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    for content, fragment in [("{", "is damaged"), (json.dumps({"storage": 5, "study_name": "s"}), "is damaged"),
                              (json.dumps({"storage": "journal:///${oc.env:HOME}/x", "study_name": "s"}),
                               "a journal needs a file")]:
        (folder / "study.json").write_text(content)
        assert_one_line_error(run_cli("sweep.report", str(folder), cwd=tmp_path), fragment)
    assert Path(folder).is_dir()


@pytest.mark.parametrize("url, fragment", [
    ("sqlite://", "in-memory SQLite database"),
    ("postgresql://u@h:notaport/db", "is not a storage URL"),
    ("sqlite:///multirun/studies/a?b.db", "may not hold '?'"),
    ("", "is invalid"),
    ("journal:", "a journal needs a file"),
])
def test_bad_storage_urls_are_named(url, fragment):
    with pytest.raises(UserError, match=re.escape(fragment)):
        st.parse(url)


def test_a_new_sqlite_study_gets_its_schema_once_from_the_sweep_never_from_its_workers(tmp_path):
    # Workers starting together on a new file raced to create Optuna's tables (a UNIQUE constraint on
    # alembic_version): the sweep creates them before any job, and a worker never creates one.
    import sqlite3

    import optuna

    path = tmp_path / "new.db"
    path.touch()  # as the sweep's lock leaves it before the study exists
    spec = st.parse(f"sqlite:///{path}")
    with pytest.raises(UserError, match="no Optuna tables"):
        st.open_storage(spec, create=False)
    assert not sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall()
    optuna.create_study(study_name="s", storage=st.open_storage(spec))
    # WAL, set once by the sweep (it stays in the file): reading the study never blocks the workers' writes.
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    opened, failed = [], []

    def worker():
        try:
            opened.append(st.load_study(spec, "s", "hydra.sweeper.storage"))
        except Exception as e:  # noqa: BLE001 - the assertion below names it
            failed.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed and len(opened) == 4
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM alembic_version").fetchone() == (1,)


def test_a_journal_url_names_one_file_however_its_slashes_are_written(tmp_path):
    # The URL saved in study.json and sent to workers must read back as the very same path, not //tmp/...
    for url in (f"journal:///{tmp_path}/s.log", f"journal://{tmp_path}/s.log", "journal://s.log", "journal:s.log"):
        spec = st.parse(url, base=tmp_path)
        assert spec.path == tmp_path / "s.log" and st.parse(spec.saved).path == spec.path, url
        assert spec.shown == f"journal://{tmp_path}/s.log"
    # A sweep folder's study.json from an earlier version (journal:////abs) still names this study's storage.
    assert st.same(f"journal:///{tmp_path}/s.log", st.parse(f"journal://{tmp_path}/s.log").saved)
    assert not st.same(f"journal://{tmp_path}/other.log", f"journal://{tmp_path}/s.log")
    assert not st.same({"not": "a url"}, f"journal://{tmp_path}/s.log")


def test_a_journal_lock_left_by_a_process_killed_mid_write_is_broken(tmp_path, monkeypatch):
    # Optuna < 4.3 waited on such a lock forever: the sweep after a killed one hung before its first trial.
    import optuna

    monkeypatch.setattr(st, "JOURNAL_LOCK_GRACE", 1)
    path = tmp_path / "study.log"
    spec = st.parse(f"journal:///{path}")
    optuna.create_study(study_name="s", storage=st.open_storage(spec))
    Path(f"{path}.lock").symlink_to(path)  # what Optuna's lock is, left behind by a SIGKILL
    written = []
    writer = threading.Thread(target=lambda: written.append(
        optuna.load_study(study_name="s", storage=st.open_storage(spec)).ask().number), daemon=True)
    writer.start()
    writer.join(timeout=120)
    assert written == [0]
    assert not Path(f"{path}.lock").exists()  # released after the write


WRITER = """
import sys, optuna
from pathlib import Path
from sweep.sweeper import storage as st
optuna.logging.set_verbosity(optuna.logging.WARNING)
spec = st.parse(sys.argv[1], base=Path.cwd())
study = optuna.create_study(study_name="stress", storage=st.open_storage(spec), load_if_exists=True)
for _ in range(5):
    trial = study.ask()
    trial.report(0.5, 1)
    study.tell(trial, trial.number)
"""


def _stress(tmp_path, rounds: int) -> None:
    import subprocess
    import sys

    for r in range(rounds):
        url = f"sqlite:///{tmp_path / f'stress{r}.db'}"
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(8)]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-1500:] for e in errors if e]
        numbers = [t.number for t in optuna.load_study(study_name="stress", storage=url).trials]
        assert sorted(numbers) == list(range(40))  # every trial landed once


def test_eight_processes_create_and_write_one_new_sqlite_study_at_once(tmp_path):
    _stress(tmp_path, rounds=2)


@pytest.mark.slow
def test_eight_processes_create_and_write_one_new_sqlite_study_100_times(tmp_path):
    _stress(tmp_path, rounds=100)


def test_a_missing_database_driver_is_named_with_what_to_install(tmp_path, monkeypatch):
    import builtins

    from helpers import assert_one_line_error, run_app

    result = run_app("--multirun", "hydra.sweeper.n_trials=1", "hydra.sweeper.storage=postgresql+nosuchdriver://u@h/db",
                     cwd=tmp_path)
    assert "hydra.sweeper.storage" in result.stderr and "Traceback" not in result.stderr
    real_import = builtins.__import__

    def no_psycopg(name, *a, **k):
        if name.split(".")[0] == "psycopg":
            raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(st.UserError, match=re.escape("needs the database driver psycopg") + ".*sweep\\[postgres\\]"):
        st.open_storage(st.parse("postgresql+psycopg://u@127.0.0.1:1/db"))
