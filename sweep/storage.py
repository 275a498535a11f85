"""Where a study lives: one parse of the storage URL, one way to open it, and no password in any output.

    None                          Optuna's in-memory storage: gone when the sweep ends, so it cannot resume
    sqlite:///relative/study.db   a file, relative to the folder the sweep started in (sqlite:////abs/path.db)
    journal:///abs/study.log      Optuna's journal file (journal://relative.log); several sweeps may share it
    postgresql://user@host/db     any SQLAlchemy database URL; the password comes from PGPASSWORD or ~/.pgpass,
                                  or from ${oc.env:VAR} in the URL, which Hydra saves unresolved
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError, first_line

SECRET_KEYS = re.compile(r"pass|pwd|secret|token", re.IGNORECASE)  # query keys whose values are never shown
MASK = "***"


@dataclass(frozen=True)
class Storage:
    kind: str  # memory | sqlite | journal | rdb
    url: str | None  # what Optuna gets: absolute paths, the password included; None for memory
    path: Path | None = None  # the sqlite or journal file
    has_password: bool = False

    def __str__(self) -> str:  # for logs, errors and saved files
        return "in-memory" if self.url is None else redact(self.url)


def parse(value: object, setting: str = "hydra.sweeper.storage", base: Path | None = None) -> Storage:
    """Check a storage setting and make its file paths absolute (relative ones are taken from `base`)."""
    if value is None:
        return Storage("memory", None)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{setting}={value!r} is invalid: expected null (in-memory), sqlite:///path/study.db, "
                        "journal:///path/study.log or a database URL such as postgresql://user@host/db")
    base = Path(base or os.getcwd())
    if value.startswith("journal:"):
        rest = value[len("journal:"):]
        rest = rest[2:] if rest.startswith("//") else rest
        if not rest:
            raise UserError(f"{setting}={value!r} is invalid: a journal needs a file, e.g. journal:///path/study.log")
        path = base / Path(rest).expanduser()
        return Storage("journal", f"journal:///{path}", path)
    from sqlalchemy.engine import make_url

    try:
        url = make_url(value)
    except Exception as e:
        raise UserError(f"{setting}={redact(value)!r} is not a storage URL ({first_line(e)}); expected e.g. "
                        "sqlite:///path/study.db, journal:///path/study.log or postgresql://user@host:5432/db") from None
    if url.get_backend_name() == "sqlite":
        tail = value.split(":///", 1)[1] if ":///" in value else ""
        if not url.database or url.database == ":memory:":
            raise UserError(f"{setting}={value!r} is an in-memory SQLite database that each process sees empty; "
                            "give a file: sqlite:///path/study.db (or null for Optuna's in-memory storage)")
        if "?" in tail or "#" in tail:
            raise UserError(f"{setting}={value!r} is invalid: a SQLite path may not hold '?' or '#' "
                            "(does hydra.sweeper.study_name contain one?)")
        path = base / Path(url.database).expanduser()
        return Storage("sqlite", f"sqlite:///{path}", path)
    secret = url.password is not None or any(SECRET_KEYS.search(k) for k in url.query)
    return Storage("rdb", url.render_as_string(hide_password=False), None, secret)


def redact(text: str) -> str:
    """`text` with every password and secret query value replaced by ***."""
    text = re.sub(r"(://[^/@:]*:)[^@/]*@", rf"\1{MASK}@", text)
    return re.sub(r"([?&][^=&]*(?:pass|pwd|secret|token)[^=&]*=)[^&#]*", rf"\1{MASK}", text, flags=re.IGNORECASE)


# ------------------------------------------------------------------ what a sweep directory remembers


def saved_form(raw: object, storage: Storage) -> str | None:
    """The storage URL to write into study.json: never a password, but enough for `sweep.report DIR` to reconnect.

    A password is only ever given as ${oc.env:VAR} (see refuse_saved_password); study.json keeps that
    reference, and readers resolve it from their own environment.
    """
    if storage.url is None:
        return None
    if not storage.has_password:
        return storage.url
    raw = str(raw)
    names = re.findall(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", raw)
    if re.fullmatch(r"\s*\$\{oc\.env:[A-Za-z_][A-Za-z0-9_]*\}\s*", raw):
        return raw.strip()  # the whole URL comes from the environment
    for name in names:
        secret = os.environ.get(name)
        if secret and secret in storage.url:
            return storage.url.replace(secret, "${oc.env:%s}" % name)
    return redact(storage.url)


def from_saved(text: str, setting: str) -> str:
    """A study.json URL, with its ${oc.env:VAR} references filled in from this process's environment."""
    def fill(m: re.Match) -> str:
        if not os.environ.get(m.group(1)):
            raise UserError(f"{setting}: the study's storage takes its password from the environment variable "
                            f"{m.group(1)}, which is not set here")
        return os.environ[m.group(1)]

    return re.sub(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)[^}]*\}", fill, text)


def refuse_saved_password(raw: object, storage: Storage, setting: str = "hydra.sweeper.storage") -> None:
    """Hydra writes the sweeper's settings into every run's .hydra/hydra.yaml: a literal password would land there."""
    if storage.has_password and "${oc.env:" not in str(raw):
        raise UserError(
            f"{setting} holds a password, which would be saved in every run's config; leave it out and set "
            "PGPASSWORD (or ~/.pgpass), or write it as ${oc.env:SWEEP_DB_PASSWORD}")


# ------------------------------------------------------------------ opening


def errors() -> tuple[type[BaseException], ...]:
    """What a storage that went away raises."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    return (optuna.exceptions.StorageInternalError, SQLAlchemyError)


def open_storage(storage: Storage, *, setting: str = "hydra.sweeper.storage", create: bool = True):
    """The Optuna storage. create=False (workers, the report) never makes a file, folder or table:
    a missing database is an error, not a fresh empty one."""
    import optuna

    if storage.kind == "memory":
        return optuna.storages.InMemoryStorage()
    if storage.path is not None and not create and not storage.path.is_file():
        raise UserError(f"{setting}={storage}: no such file {storage.path}")
    if storage.kind == "journal":
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            storage.path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(storage.path)))  # Optuna has no heartbeats for journals
        except Exception as e:
            raise UserError(f"{setting}={storage} cannot be opened: {first_line(e)}") from None

    url, engine_kwargs = storage.url, None
    if storage.kind == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": 60}}  # wait for the other process's write, don't fail
        if create:
            try:
                storage.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"{setting}={storage}: cannot create its folder ({first_line(e)})") from None
        else:  # mode=rw: SQLite must not quietly create an empty database where the study's file was
            _check_sqlite_study(storage.path, setting, storage)
            url = f"sqlite:///file:{storage.path}?mode=rw&uri=true"
    try:
        for attempt in range(5):
            try:
                rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
                if storage.kind == "sqlite":
                    _write_ahead_log(rdb.engine)
                return rdb
            except errors() as e:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees a duplicate-key error and finds the tables there on the next try.
                racing = "duplicate key" in str(e) or "already exists" in str(e)
                if not racing or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{setting}={storage} cannot be opened: {redact(first_line(_cause(e)))}") from None


def _cause(e: BaseException) -> BaseException:
    """The driver's own error under Optuna's wrapper ("an exception is raised during the commit")."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return e


def _check_sqlite_study(path: Path, setting: str, storage: Storage) -> None:
    """A file that is not an SQLite database, or one without Optuna's tables, is named as such; Optuna would
    otherwise blame "an exception during the commit"."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as e:
        raise UserError(f"{setting}={storage} is not an Optuna study storage ({e})") from None
    if "studies" not in tables:
        raise UserError(f"{setting}={storage} is not an Optuna study storage (it has no Optuna tables)")


def _write_ahead_log(engine) -> None:
    """SQLite in WAL mode: a report read while the sweep runs never blocks its writes, and commits are cheaper."""
    from sqlalchemy import event

    def pragmas(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reconnect with it


def load_study(storage: Storage, name: str, setting: str, **kw):
    """An existing study, read-only: a missing or foreign file is one error line, never a new study."""
    return load_study_from(open_storage(storage, setting=setting, create=False), storage, name, setting, **kw)


def load_study_from(backend, storage: Storage, name: str, setting: str, **kw):
    import optuna

    if name is None:
        raise UserError(f"{setting}: no study name given")
    try:
        return optuna.load_study(study_name=name, storage=backend, **kw)
    except KeyError:
        raise UserError(f"{setting}={storage}: no study named {name!r} there") from None
    except Exception as e:  # a text file, a 0-byte database, a database without Optuna's tables
        raise UserError(f"{setting}={storage} is not an Optuna study storage ({redact(first_line(e))})") from None


# ------------------------------------------------------------------ guarding a file while a sweep uses it


class FileWatch:
    """Notices when the study's file is deleted or replaced under a running sweep. SQLite would otherwise
    let each new connection create an empty database at the path, and the results would silently split."""

    def __init__(self, storage: Storage):
        self.path = storage.path
        self.identity = self._identity()

    def _identity(self):
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> str | None:
        """None while the file is the one the sweep opened; otherwise what happened to it."""
        if self.identity is None:
            return None
        now = self._identity()
        if now is None:
            return f"{self.path} was deleted"
        if now != self.identity:
            return f"{self.path} was replaced by another file"
        return None


def lock_sqlite(storage: Storage, setting: str = "hydra.sweeper.storage"):
    """One sweep per SQLite file: SQLite locks the whole file per write, and several sweeps writing it stall and
    time out. The lock sits beside the resolved file, so a symlink or another spelling of the path shares it."""
    if storage.kind != "sqlite":
        return None
    db = storage.path
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        real = db.resolve()
        handle = open(f"{real}.lock", "w")
    except OSError as e:
        raise UserError(f"{setting}={storage}: cannot create its lock file ({first_line(e)})") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"{setting}={storage} is in use by another running sweep; SQLite serves one sweep at a time. "
            "For several sweeps on one study use hydra.sweeper.storage=journal:///path/study.log "
            "or postgresql://user@host/db") from None
    return handle
