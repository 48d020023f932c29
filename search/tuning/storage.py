"""The storage layer: SQLAlchemy URLs checked up front, Optuna's RDBStorage with heartbeats,
and the artifact store beside it."""

from __future__ import annotations

import functools
import os
import re
import time
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, quote_plus, unquote

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from search.base.config import Storage
from search.base.errors import StorageUnavailable, UsageError
from search.base.files import folder_in, write_bytes

DEFAULT_URL = "sqlite:///storage/optuna.db"
RECONNECT_SECONDS = 60.0
CHECKPOINT_WAIT_SECONDS = 5.0  # for another command's write to end before the log is emptied
# What a failing storage raises: the driver's error, Optuna's wrapping of it, or our own.
STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, StorageUnavailable)
# A bare dialect means SQLAlchemy's default driver (psycopg2, mysqlclient), which we don't ship.
INSTALLED_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}


# Where a URL holds a password: user-info (as SQLAlchemy reads it) and query keys such as
# ``password=``, which psycopg and PyMySQL pass on; and ``key=value`` as drivers echo a DSN.
_SECRET_KEY = r"[^=&;\s?]*(?:pass|pwd|secret|token)[^=&;\s]*"
_USERINFO = re.compile(r"^[\w+]+://[^:/]*:([^@]*)@")
_QUERY = re.compile(rf"([?&;]{_SECRET_KEY}=)([^&]*)", re.IGNORECASE)
_DSN = re.compile(rf"\b({_SECRET_KEY}\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&;,)]+)", re.IGNORECASE)


def mask(url: str) -> str:
    """The URL with any password replaced by ``***``; safe for logs, errors and exports."""
    try:
        parsed = make_url(url)
        clear = "@" not in (parsed.host or "")  # else an unescaped '@' in the password
    except (sqlalchemy.exc.ArgumentError, ValueError):
        clear = False
    if clear:
        url = parsed.render_as_string(hide_password=True)
    else:  # not a URL we can read: hide all before the last '@'
        url = re.sub(r"^(.*?:/*).*@", r"\1***@", url, flags=re.DOTALL)
    return _DSN.sub(r"\1***", _QUERY.sub(r"\1***", url))


def _secrets(url: str) -> set[str]:
    """Each form the URL's passwords can take in a message: as typed, decoded, re-encoded."""
    found = [m[1] for m in _USERINFO.finditer(url)] + [m[2] for m in _QUERY.finditer(url)]
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        parsed = None
    if parsed is not None:
        found.append(parsed.password or "")
        for key, values in parsed.query.items():
            if re.fullmatch(_SECRET_KEY, key, re.IGNORECASE):
                found.extend([values] if isinstance(values, str) else values)
    forms = {f(str(v)) for v in found for f in (str, unquote, quote, quote_plus)}
    return {form for form in forms if form}


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's message, which may echo the DSN) with the URL's passwords masked."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _DSN.sub(r"\1***", text)


def _parse(url: str) -> URL:
    """The URL, with ``postgresql://`` read as ``postgresql+psycopg://`` (psycopg 3), and so on."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UsageError(f"STORAGE {mask(url)!r} is not a SQLAlchemy URL (e.g. {DEFAULT_URL})") from None
    if "@" in (parsed.host or ""):
        raise UsageError(f"STORAGE {mask(url)!r}: write an '@' in a user name or password as %40")
    memory = not parsed.database or ":memory:" in parsed.database or parsed.query.get("mode") == "memory"
    if parsed.get_backend_name() == "sqlite" and memory:
        raise UsageError(
            f"STORAGE {mask(url)!r}: an in-memory SQLite database is neither shared between workers "
            f"nor kept; give a file (e.g. {DEFAULT_URL})"
        )
    if parsed.drivername in INSTALLED_DRIVERS:
        parsed = parsed.set(drivername=f"{parsed.drivername}+{INSTALLED_DRIVERS[parsed.drivername]}")
    return parsed


def _reason(exc: BaseException, url: str) -> str:
    line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    return scrub(line, url)


@dataclass(frozen=True)
class StudyStorage:
    """An open study storage: its URL, Optuna's ``RDBStorage`` on it, and whether it is read-only."""

    url: str
    rdb: optuna.storages.RDBStorage
    read_only: bool = False

    @property
    def masked(self) -> str:
        """The URL for messages, files and the screen: any password shown as ``***``."""
        return mask(self.url)

    def reason(self, exc: BaseException) -> str:
        """The first line of a database error, with the URL's password (if any) masked."""
        return _reason(exc, self.url)

    def load(self, study_name: str) -> optuna.Study:
        """The named study, or one line saying it is not there."""
        try:
            return optuna.load_study(study_name=study_name, storage=self.rdb)
        except KeyError:
            raise UsageError(f"no study named {study_name!r} in {self.masked}") from None


def check_artifact_folder(path: str | Path) -> None:
    """That the artifact folder exists or can be made, without making it (nothing is written yet)."""
    folder = Path(path).absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise UsageError(f"storage.artifacts {path}: cannot create (Not a directory)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"storage.artifacts {path}: cannot create (Permission denied)")


class LinkSafeArtifactStore(FileSystemArtifactStore):
    """Optuna's artifact store on a folder, writing each file as every command does
    (``search.base.files``): a link found where an artifact goes is replaced, never followed."""

    def __init__(self, base_path: str | Path) -> None:
        super().__init__(base_path)
        self.folder = Path(base_path)

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        if artifact_id in ("", ".", "..") or Path(artifact_id).name != artifact_id:
            raise ValueError(f"artifact id {artifact_id!r} is not a file name")
        write_bytes(self.folder / artifact_id, content_body)


def artifact_store(path: str | Path) -> FileSystemArtifactStore:
    """The folder where trials' files (curves, histories) live, as Optuna's artifact store."""
    return LinkSafeArtifactStore(folder_in(Path(path)))


def _engine_kwargs(url: URL) -> dict:
    kwargs: dict = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}  # wait on a locked database, don't fail
    else:
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs


def _sqlite_connect(dbapi_connection: object, record: object) -> None:
    """WAL: readers don't wait for the writer. And no implicit transactions (``_begin`` opens them)."""
    dbapi_connection.execute("PRAGMA journal_mode=WAL")  # type: ignore[attr-defined]
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]


# Set while one of Optuna's storage reads runs (``_defer_reads``): its transaction takes no lock.
_reading: ContextVar[bool] = ContextVar("sqlite_reading", default=False)


def _begin(connection: sqlalchemy.Connection) -> None:
    """A read sees the last committed state at once (a WAL snapshot); every other transaction
    takes the write lock first (waiting up to the busy timeout for it).

    Python's sqlite3 starts a transaction only at the first write, so a read-then-write, such as
    Optuna taking a queued trial (WAITING -> RUNNING), read a snapshot that another worker could
    change before the write: two workers then ran the same queued trial. Taking the lock before
    the read makes the check and the change one step.
    """
    connection.exec_driver_sql("BEGIN" if _reading.get() else "BEGIN IMMEDIATE")


def _read_only_call(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        token = _reading.set(True)
        try:
            return method(*args, **kwargs)
        finally:
            _reading.reset(token)

    return call


# Optuna's storage reads besides its public ``get_*`` methods: what its cache in front of
# ``RDBStorage`` calls (``optuna.storages._CachedStorage``). None of them writes.
_PRIVATE_READS = ("_get_trials", "_get_best_trial_id", "_get_stale_trial_ids")


def _defer_reads(rdb: optuna.storages.RDBStorage) -> None:
    """Optuna's storage reads run without the write lock, so that ``export``, ``report``, the
    dashboard and a worker's progress never wait for another command's write."""
    for name in dir(optuna.storages.RDBStorage):
        if name.startswith("get_") or name in _PRIVATE_READS:
            setattr(rdb, name, _read_only_call(getattr(rdb, name)))


def checkpoint(url: str | None) -> None:
    """Move what was written from SQLite's write-ahead log (``<file>-wal``) into the database file
    and empty the log, so that the file alone is the whole database. Called when a command that
    writes ends; a log that another command is still using is left for that one (no error)."""
    try:
        parsed = _parse(url or DEFAULT_URL)
    except UsageError:
        return
    if parsed.get_backend_name() != "sqlite" or not Path(f"{parsed.database}-wal").is_file():
        return  # nothing in a log to move
    engine = sqlalchemy.create_engine(parsed, connect_args={"timeout": CHECKPOINT_WAIT_SECONDS})
    try:
        connection = engine.raw_connection()
        try:
            connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            connection.close()
    except sqlalchemy.exc.SQLAlchemyError:
        pass  # locked or read-only: the log stays, the data is safe in it
    finally:
        engine.dispose()


def _retry_connects(engine: sqlalchemy.Engine, url: str) -> None:
    """Reconnect with backoff for up to ``RECONNECT_SECONDS`` when the server goes away; then
    raise ``StorageUnavailable``, which says so."""

    @event.listens_for(engine, "do_connect")
    def connect(dialect, conn_rec, cargs, cparams):  # type: ignore[no-untyped-def]
        deadline, delay = time.monotonic() + RECONNECT_SECONDS, 0.5
        while True:
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise StorageUnavailable(
                        f"STORAGE {mask(url)}: database unreachable for {RECONNECT_SECONDS:.0f}s, "
                        f"stopping ({_reason(exc, url)})"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 8.0)


def _has_tables(url: str, parsed: URL) -> bool:
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(parsed))
    try:
        return "studies" in sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _check_sqlite_file(parsed: URL, shown: str, read_only: bool, default: bool) -> None:
    database = Path(parsed.database)
    if read_only and not database.is_file():
        raise UsageError(f"STORAGE {shown}: no such database file (run a search first)")
    if default:
        database.parent.mkdir(parents=True, exist_ok=True)
    elif not database.parent.is_dir():
        raise UsageError(f"STORAGE {shown}: folder {database.parent} does not exist")


def _rdb_storage(rendered: str, parsed: URL, settings: Storage, read_only: bool) -> optuna.storages.RDBStorage:
    """Optuna's storage on the URL. Of commands creating its tables at the same moment, those that
    lose the race ("already exists", a duplicate version stamp) try again and find them made."""

    def create() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():  # heartbeats are marked experimental since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                rendered,
                engine_kwargs=_engine_kwargs(parsed),
                heartbeat_interval=settings.heartbeat_interval,
                grace_period=settings.grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=settings.max_retry
                ),
                skip_table_creation=read_only,
            )

    for _ in range(2):
        try:
            return create()
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if not any(race in str(exc).lower() for race in ("already exists", "duplicate", "unique")):
                raise
    return create()


def open_storage(
    url: str | None, settings: Storage = Storage(), *, read_only: bool = False
) -> StudyStorage:
    """Connect to the study storage, creating its tables unless ``read_only``.

    Commands that only read (``export``, ``report``, ``dashboard``) pass ``read_only``: they never
    create a SQLite file or tables, and a storage that holds no studies is one line.
    """
    url = url or DEFAULT_URL
    parsed = _parse(url)
    shown = mask(url)
    try:
        parsed.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise UsageError(f"STORAGE {shown}: unknown database driver {parsed.drivername!r}") from None
    except ImportError as exc:
        raise UsageError(f"STORAGE {shown}: database driver not installed ({exc})") from None
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_file(parsed, shown, read_only, default=url == DEFAULT_URL)
    rendered = parsed.render_as_string(hide_password=False)
    try:
        if read_only and not _has_tables(rendered, parsed):
            raise UsageError(f"STORAGE {shown}: holds no studies (run a search first)")
        rdb = _rdb_storage(rendered, parsed, settings, read_only)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise UsageError(f"STORAGE {shown}: cannot open ({_reason(exc, url)})") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(rdb.engine, "connect", _sqlite_connect)
        event.listen(rdb.engine, "begin", _begin)
        _defer_reads(rdb)
        rdb.engine.dispose()  # so that every pooled connection is opened this way
    _retry_connects(rdb.engine, url)
    return StudyStorage(url, rdb, read_only)
