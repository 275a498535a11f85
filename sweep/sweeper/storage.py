"""Where a study lives: one parse of the storage URL, one way to open it, and no secret in any output.

    None                          Optuna's in-memory storage: gone when the sweep ends, so it cannot resume
    sqlite:///relative/study.db   a file, relative to the folder the sweep started in (sqlite:////abs/path.db)
    journal:///abs/study.log      Optuna's journal file (journal://relative.log); several sweeps may share it
    postgresql://user@host/db     any SQLAlchemy database URL; the password comes from PGPASSWORD or ~/.pgpass,
                                  or from ${oc.env:VAR} as the whole password, which Hydra saves unresolved

The rule for secrets, judged on the parsed URL: a password (or a query value such as ?password=) is either absent or
exactly one ${oc.env:VAR} reference. Such a reference is resolved only for a URL this user gave (the sweep's config,
or --storage on a command line), never for one read from a file: a sweep folder never decides where a secret goes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from sweep.errors import UserError, first_line
from sweep.redact import MASK, SECRET_KEYS, redact

ENV_REF = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)\}")  # ${oc.env:NAME}, with no default
ANY_REF = re.compile(r"\$\{[^{}]*\}")
log = logging.getLogger(__name__)
HINT = ("leave it out and set PGPASSWORD (or ~/.pgpass), or make the whole password ${oc.env:SWEEP_DB_PASSWORD}")


@dataclass(frozen=True)
class Storage:
    kind: str  # memory | sqlite | journal | rdb
    url: str | None  # what Optuna gets: absolute paths, secrets included; None for memory
    path: Path | None = None  # the sqlite or journal file
    saved: str | None = None  # the same URL with its ${oc.env:...} references kept: what files and workers get
    shown: str = "in-memory"  # for logs and errors: secrets masked
    secrets: tuple = field(default=(), repr=False)  # values never to print

    @property
    def has_password(self) -> bool:
        return bool(self.secrets) or (self.saved is not None and ENV_REF.search(self.saved) is not None)

    def __str__(self) -> str:
        return self.shown

    def redact(self, text: str) -> str:
        """`text` (an error from a driver, say) with this storage's secrets masked."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return redact(text)


def parse(value: object, setting: str = "hydra.sweeper.storage", base: Path | None = None,
          resolve_env: bool = True) -> Storage:
    """Check a storage setting: its secrets (by the parsed URL), and its file paths, made absolute (relative ones are
    taken from `base`). `value` may hold ${oc.env:VAR} references, resolved here when resolve_env."""
    if value is None:
        return Storage("memory", None)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{setting}={value!r} is invalid: expected null (in-memory), sqlite:///path/study.db, "
                        "journal:///path/study.log or a database URL such as postgresql://user@host/db")
    base = Path(base or os.getcwd())
    if value.startswith("journal:"):
        rest = value[len("journal:"):]
        rest = rest[2:] if rest.startswith("//") else rest
        if not rest or ANY_REF.search(rest):
            raise UserError(f"{setting}={value!r} is invalid: a journal needs a file, e.g. journal:///path/study.log")
        if rest.startswith("/"):  # journal:////abs (a path pasted after journal:///) is /abs, not //abs
            rest = "/" + rest.lstrip("/")
        path = base / Path(rest).expanduser()
        return Storage("journal", f"journal://{path}", path, saved=f"journal://{path}", shown=f"journal://{path}")
    from sqlalchemy.engine import make_url

    refs: dict[str, str] = {}

    def hide(m: re.Match) -> str:  # a reference becomes a token the URL grammar leaves alone
        refs[f"sweepref{len(refs)}x"] = m.group(0)
        return f"sweepref{len(refs) - 1}x"

    hidden = ANY_REF.sub(hide, value)
    try:
        url = make_url(hidden)
    except Exception as e:
        raise UserError(f"{setting}={redact(value)!r} is not a storage URL ({first_line(e)}); expected e.g. "
                        "sqlite:///path/study.db, journal:///path/study.log or postgresql://user@host:5432/db") from None
    secret_keys = [k for k in url.query if SECRET_KEYS.search(k)]
    shown = redact(url.set(query={k: (MASK if k in secret_keys else v) for k, v in url.query.items()})
                   .render_as_string(hide_password=True))
    for token, ref in refs.items():
        shown = shown.replace(token, ref)
    if url.get_backend_name() == "sqlite":
        if secret_keys or url.password is not None:
            raise UserError(f"{setting}={shown!r} holds a password, which SQLite has no use for; remove it")
        if not url.database or url.database == ":memory:":
            raise UserError(f"{setting}={shown!r} is an in-memory SQLite database that each process sees empty; "
                            "give a file: sqlite:///path/study.db (or null for Optuna's in-memory storage)")
        tail = value.split(":///", 1)[1] if ":///" in value else ""
        if "?" in tail or "#" in tail or refs:
            raise UserError(f"{setting}={shown!r} is invalid: a SQLite path may not hold '?', '#' or ${{...}} "
                            "(does hydra.sweeper.study_name contain one?)")
        path = base / Path(url.database).expanduser()
        return Storage("sqlite", f"sqlite:///{path}", path, saved=f"sqlite:///{path}", shown=f"sqlite:///{path}")

    def literal_secret(part: str | None) -> bool:
        return part is not None and not (part in refs and ENV_REF.fullmatch(refs[part]))

    if literal_secret(url.password) or any(literal_secret(url.query[k]) for k in secret_keys):
        raise UserError(f"{setting}={shown!r} holds a password, which would be saved in every run's config; {HINT}")
    if not resolve_env:
        return Storage("rdb", None, saved=value, shown=shown)

    secrets: list[str] = []

    def fill(part):
        if part is None:
            return None
        if isinstance(part, tuple):
            return tuple(fill(p) for p in part)
        for token, ref in refs.items():
            if token in part:
                m = ENV_REF.fullmatch(ref)
                if m is None:
                    raise UserError(f"{setting}={shown!r}: {ref} cannot be used in a storage URL; only ${{oc.env:VAR}}")
                if m.group(1) not in os.environ:
                    raise UserError(f"{setting}={shown!r} takes {ref} from the environment, which does not set "
                                    f"{m.group(1)} here")
                part = part.replace(token, os.environ[m.group(1)])
        return part

    password, query = fill(url.password), {k: fill(v) for k, v in url.query.items()}
    secrets += [password] if password else []
    secrets += [query[k] for k in secret_keys if isinstance(query[k], str) and query[k]]
    full = url.set(username=fill(url.username), password=password, host=fill(url.host),
                   database=fill(url.database), query=query)
    return Storage("rdb", full.render_as_string(hide_password=False), saved=value, shown=shown,
                   secrets=tuple(s for s in secrets if s))


def to_env(saved: str) -> str:
    """A storage URL for an environment variable that Hydra sets: its ${oc.env:VAR} references as <env:VAR>."""
    return ENV_REF.sub(lambda m: f"<env:{m.group(1)}>", saved)


def from_env(value: str) -> str:
    return re.sub(r"<env:([A-Za-z_][A-Za-z0-9_]*)>", lambda m: "${oc.env:%s}" % m.group(1), value)


def text_of(config) -> object:
    """hydra.sweeper.storage of a config, with every interpolation resolved but ${oc.env:VAR}, which stays as written
    (Hydra saves it that way): the secret it names is read only where a connection is made, by parse()."""
    from omegaconf import OmegaConf

    raw = OmegaConf.to_container(config.hydra.sweeper, resolve=False).get("storage")
    if not isinstance(raw, str) or "${" not in raw:
        return raw
    kept: dict[str, str] = {}

    def keep(m: re.Match) -> str:
        kept[f"sweepkept{len(kept)}x"] = m.group(0)
        return f"sweepkept{len(kept) - 1}x"

    copy = OmegaConf.create(OmegaConf.to_container(config, resolve=False))
    copy.hydra.sweeper.storage = ENV_REF.sub(keep, raw)
    try:
        text = str(copy.hydra.sweeper.storage)
    except Exception as e:  # an interpolation that does not resolve
        raise UserError(f"hydra.sweeper.storage: {redact(first_line(e))}") from None
    for token, ref in kept.items():
        text = text.replace(token, ref)
    return text


def from_file(value: object, setting: str, base: Path) -> Storage:
    """A storage URL read from a file (study.json): files are opened, a database never is, and no ${oc.env:...} is
    resolved: where a secret goes is for the user to say, with --storage."""
    spec = parse(value, setting, base=base, resolve_env=False)
    if spec.kind == "rdb":
        bare = ENV_REF.sub("", spec.shown).replace(f":{MASK}@", "@").replace(":@", "@")
        raise UserError(f"{setting}: the study is in a database ({spec.shown}); a sweep folder never decides where "
                        f"this command connects. Give the storage yourself: --storage '{bare}' (the password from "
                        "PGPASSWORD or ~/.pgpass, or ${oc.env:VAR} typed by you)")
    return spec


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
            repair_journal(storage.path)
            return JournalStorage(JournalFileBackend(str(storage.path), lock_obj=journal_lock(str(storage.path))))
        except Exception as e:
            raise UserError(f"{setting}={storage} cannot be opened: {first_line(e)}") from None

    url, engine_kwargs = storage.url, None
    if storage.kind == "sqlite":
        # Wait up to 60 s for another process's write instead of failing. A transaction takes its write lock when it
        # begins (BEGIN IMMEDIATE, which waits) rather than upgrading from a read, which SQLite refuses at once with
        # "database is locked" whenever another writer got there first.
        engine_kwargs = {"connect_args": {"timeout": 60, "isolation_level": "IMMEDIATE"}}
        if create:
            try:
                storage.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"{setting}={storage}: cannot create its folder ({first_line(e)})") from None
            _write_ahead_log(storage, setting)
        else:  # mode=rw: SQLite must not quietly create an empty database where the study's file was
            _check_sqlite_study(storage.path, setting, storage)
            url = f"sqlite:///file:{storage.path}?mode=rw&uri=true"
    try:
        for attempt in range(5):
            try:
                rdb = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, skip_table_creation=not create)
                if storage.kind == "sqlite":
                    _sync_normal(rdb.engine)
                return rdb
            except errors() as e:
                # Workers starting together on an empty database race to create Optuna's tables;
                # the loser sees a duplicate-key error and finds the tables there on the next try.
                racing = any(w in str(e) for w in (
                    "duplicate key", "already exists", "UNIQUE constraint failed", "database is locked"))
                if not racing or attempt == 4:
                    raise
                time.sleep(0.5 * (attempt + 1))
    except UserError:
        raise
    except Exception as e:
        missing = _cause(e)
        if isinstance(missing, ModuleNotFoundError):  # the database's driver
            hint = {"psycopg": "pip install 'sweep[postgres]'",
                    "psycopg2": "pip install 'sweep[postgres]' and write postgresql+psycopg://..."}.get(
                str(missing.name), f"install the package that provides {missing.name}")
            raise UserError(f"{setting}={storage} needs the database driver {missing.name}, which is not installed "
                            f"here: {hint}") from None
        raise UserError(f"{setting}={storage} cannot be opened: {cause(e, storage)}") from None


def same(a: object, b: object) -> bool:
    """Two saved storage URLs name the same storage; earlier versions saved an absolute journal as journal:////abs."""
    if a == b:
        return True
    try:
        return parse(a, resolve_env=False).saved == parse(b, resolve_env=False).saved
    except UserError:
        return False


JOURNAL_LOCK_GRACE = 30  # seconds one journal lock may stand before it counts as a dead process's (Optuna's default)


def journal_lock(path: str):
    """Optuna's symlink lock on a journal file, which breaks a lock left by a process killed while writing.
    Optuna < 4.3 waits on such a lock forever, so a sweep after a killed one would hang; this gives those versions
    the stale-lock rule that Optuna 4.3 added."""
    import inspect

    from optuna.storages.journal import JournalFileSymlinkLock

    if "grace_period" in inspect.signature(JournalFileSymlinkLock).parameters:
        return JournalFileSymlinkLock(path, grace_period=JOURNAL_LOCK_GRACE)

    class StaleBreakingLock(JournalFileSymlinkLock):
        def acquire(self) -> bool:
            link, seen, since, delay = path + ".lock", None, time.monotonic(), 0.001
            while True:
                try:
                    os.symlink(path, link)  # where Optuna's own lock goes: tests/plugin/test_private_api.py
                    return True
                except FileExistsError:
                    pass
                try:
                    held = os.lstat(link)
                except FileNotFoundError:
                    continue  # released meanwhile
                if (held.st_ino, held.st_mtime_ns) != seen:  # another holder: its own grace
                    seen, since = (held.st_ino, held.st_mtime_ns), time.monotonic()
                elif time.monotonic() - since > JOURNAL_LOCK_GRACE:
                    log.warning("Breaking the lock on %s, held for over %d s (a process killed while writing "
                                "leaves it)", path, JOURNAL_LOCK_GRACE)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(link)
                    continue
                time.sleep(delay)
                delay = min(2 * delay, 1)

    return StaleBreakingLock(path)


def repair_journal(path: Path) -> None:
    """A journal whose last record was cut off (its writer died mid-write) loses nothing else: the torn tail is moved
    to <journal>.torn-<time> with a warning. Otherwise the next record would be appended to the torn one, and from
    then on no reader could get past that line. Done under the journal's lock, which every writer holds while it
    appends, so a tail without its newline is a dead writer's, never a live one's."""
    try:
        if path.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    lock = journal_lock(str(path))
    lock.acquire()
    try:
        with open(path, "rb+") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return
            cut, step = end, 1 << 16
            while cut > 0:  # back to the last complete record's newline
                start = max(0, cut - step)
                f.seek(start)
                at = f.read(cut - start).rfind(b"\n")
                if at >= 0:
                    cut = start + at + 1
                    break
                cut = start
            f.seek(cut)
            torn = f.read()
            kept = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
            kept.write_bytes(torn)
            f.truncate(cut)
        log.warning("%s: its last record was cut off (a process died while writing it); the %d bytes were moved "
                    "to %s and every complete record is kept", path, len(torn), kept)
    finally:
        lock.release()


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


def _write_ahead_log(storage: Storage, setting: str) -> None:
    """SQLite in WAL mode: a report read while the sweep runs never blocks its writes, and commits are cheaper. The
    mode is kept in the file, so it is set once, by the sweep, before its workers or Optuna's engine connect."""
    import sqlite3

    # Switching a file to WAL can fail at once with "database is locked" when other processes open it at the same
    # moment (SQLite's busy timeout does not cover the switch), so it is retried for up to a minute.
    deadline = time.monotonic() + 60
    while True:
        try:
            with contextlib.closing(sqlite3.connect(storage.path, timeout=60)) as db:
                if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    db.execute("PRAGMA journal_mode=WAL").fetchall()
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise UserError(f"{setting}={storage} cannot be opened: {first_line(e)}") from None
            time.sleep(0.05)
        except sqlite3.Error as e:
            raise UserError(f"{setting}={storage} cannot be opened: {first_line(e)}") from None


def _sync_normal(engine) -> None:
    """Per connection: with WAL, commits need not wait for the disk (a crash loses no committed trial)."""
    from sqlalchemy import event

    def pragmas(connection, _record):
        cursor = connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener reconnect with it


def cause(e: BaseException, storage: Storage) -> str:
    """The database driver's own reason for a storage error, in one line, any password masked."""
    return storage.redact(first_line(_cause(e)))


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
        raise UserError(f"{setting}={storage} is not an Optuna study storage ({storage.redact(first_line(e))})") from None


# ------------------------------------------------------------------ a trial's reports


# Optuna's tables are private. A report is written straight into them only at a schema version it is known for (Optuna
# records it in the file, and bumps it on any change); tests/plugin/test_private_api.py fails when that changes.
_REPORT_SCHEMAS = ("v3.2.0.a",)
_INSERT_REPORT = ("INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) "
                  "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM trials WHERE trial_id = ? AND state = 'RUNNING')")


def report_writer(backend):
    """How a running trial writes a report: `write(trial_id, step, value)`. Optuna's call costs ~1 ms of Python per
    report in its ORM, and 2-7 ms when busy processes share the cores, which a training loop waits for every epoch.
    On SQLite, at a known schema, it is one INSERT through the storage's own connections instead (~0.05 ms); a report
    that INSERT does not write (a finished trial, a step already there, a database error) goes to Optuna's call,
    which answers as Optuna does."""
    import math
    import sqlite3

    import optuna

    public = backend.set_trial_intermediate_value
    if type(backend) is not optuna.storages.RDBStorage or backend.engine.dialect.name != "sqlite":
        return public
    try:
        if backend.get_current_version() not in _REPORT_SCHEMAS:
            return public
    except errors():
        return public

    def write(trial_id: int, step: int, value: float) -> None:
        kind = "FINITE" if math.isfinite(value) else "NAN" if math.isnan(value) else "INF_POS" if value > 0 else "INF_NEG"
        stored = value if kind == "FINITE" else None
        connection = backend.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(_INSERT_REPORT, (trial_id, step, stored, kind, trial_id))
            written = cursor.rowcount == 1
            cursor.close()
            connection.commit()
        except sqlite3.Error:
            connection.rollback()
            written = False
        finally:
            connection.close()
        if not written:
            backend.set_trial_intermediate_value(trial_id, step, value)

    return write


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
