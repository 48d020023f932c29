"""The storage layer: SQLAlchemy URLs checked up front, Optuna's RDBStorage with heartbeats,
and the artifact store beside it."""

from __future__ import annotations

import functools
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
# A server connection that goes silent is dropped after LINK_SECONDS (TCP keepalives and user
# timeout on PostgreSQL, socket read/write timeouts on MySQL); new connections are then tried for
# RECONNECT_SECONDS, CONNECT_SECONDS each; once that gave up, each later connection is tried once
# (the worker's last two writes, recording its trial's end). So a worker cut off from its database
# notices within NOTICE_SECONDS, and rides out a shorter cut.
LINK_SECONDS = 20
CONNECT_SECONDS = 5
RECONNECT_SECONDS = 20.0
CHECKPOINT_WAIT_SECONDS = 5.0  # for another command's write to end before the log is emptied
NOTICE_SECONDS = LINK_SECONDS + int(RECONNECT_SECONDS) + 3 * CONNECT_SECONDS
# A statement (a lock wait included) ends in an error after this on the server; MySQL's lock waits
# are shorter than its read timeout, so that the server's error comes first.
STATEMENT_SECONDS = 20
MYSQL_LOCK_WAIT_SECONDS = 15
# Connections per process: one kept open, a second for the moment two threads (a trial and its
# heartbeat, a command and its progress line) use the storage at once.
POOL_SIZE, POOL_OVERFLOW = 1, 2
# Server connections a worker process holds at most (its trial and its heartbeat), and the most a
# command holds itself besides its workers (its storage, its progress line, the one worker it
# runs in its own process), as measured (docs/fleet.md).
WORKER_CONNECTIONS = 2
COMMAND_CONNECTIONS = 3
POOLER_DOCS = "docs/fleet.md"
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

    def use(self, settings: Storage) -> None:
        """Take a study's heartbeat settings on this open storage: commands that read their config
        from the study (``worker``, ``confirm``) open the storage before they know them."""
        self.rdb.heartbeat_interval = settings.heartbeat_interval
        self.rdb.grace_period = settings.grace_period
        self.rdb.heartbeat_stale_trial_callback = self.rdb.failed_trial_callback = _retry(settings)


class StorageOpener:
    """One command's storage: its URL (None: ``DEFAULT_URL``), opened on first use and never
    again, so that every step of the command (picking the study, reading its config, running
    trials, writing the summary) shares one handle and one pool of connections. The command line
    builds one per command and passes it down; nothing is opened before a step needs it, so bad
    input found first (a data folder, say) leaves no new database behind."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._handle: StudyStorage | None = None

    @property
    def opened(self) -> bool:
        """Whether a step of the command has opened the storage."""
        return self._handle is not None

    def open(self, settings: Storage | None = None, *, read_only: bool = False) -> StudyStorage:
        """The storage, opened by the first call as ``open_storage`` opens it (``read_only``: no
        file or tables made); later calls return the same one, taking ``settings``' heartbeat."""
        if self._handle is None:
            self._handle = open_storage(self.url, settings or Storage(), read_only=read_only)
        elif settings is not None:
            self._handle.use(settings)
        return self._handle


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


def server_connect_args(backend: str) -> dict:
    """Driver arguments for every PostgreSQL (psycopg 3) or MySQL (PyMySQL) connection: connect
    timeout, a silent link dropped after ``LINK_SECONDS``; on PostgreSQL no server-side prepared
    statements (PgBouncer in transaction pooling mode hands each transaction any server
    connection, where a statement prepared on another is unknown)."""
    if backend == "postgresql":
        return {"connect_timeout": CONNECT_SECONDS, "prepare_threshold": None, "application_name": "search",
                "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 5,
                "keepalives_count": (LINK_SECONDS - 5) // 5, "tcp_user_timeout": LINK_SECONDS * 1000}
    return {"connect_timeout": CONNECT_SECONDS, "read_timeout": LINK_SECONDS, "write_timeout": LINK_SECONDS,
            "init_command": f"SET SESSION innodb_lock_wait_timeout = {MYSQL_LOCK_WAIT_SECONDS}, "
                            f"lock_wait_timeout = {MYSQL_LOCK_WAIT_SECONDS}"}


def _engine_kwargs(url: URL) -> dict:
    kwargs: dict = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}  # wait on a locked database, don't fail
    else:
        kwargs["connect_args"] = server_connect_args(url.get_backend_name())
        kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
    return kwargs


def _statement_timeout(connection: sqlalchemy.Connection) -> None:
    """PostgreSQL: every transaction ends its statements after ``STATEMENT_SECONDS``. Set per
    transaction (SET LOCAL), as PgBouncer's transaction pooling keeps no session setting and
    refuses the ``options`` startup parameter."""
    connection.exec_driver_sql(f"SET LOCAL statement_timeout = '{STATEMENT_SECONDS}s'")


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
    except (sqlalchemy.exc.SQLAlchemyError, sqlite3.Error):
        pass  # locked, read-only or a full disk: the log stays, the data is safe in it
    finally:
        engine.dispose()


def _retry_connects(engine: sqlalchemy.Engine, url: str) -> None:
    """Reconnect with backoff for up to ``RECONNECT_SECONDS`` when the server goes away; then
    raise ``StorageUnavailable``, which says so. Until a connection succeeds again, later ones
    are tried once each: the outage has been waited out already."""
    unreachable = False

    @event.listens_for(engine, "do_connect")
    def connect(dialect, conn_rec, cargs, cparams):  # type: ignore[no-untyped-def]
        nonlocal unreachable
        deadline, delay = time.monotonic() + (0 if unreachable else RECONNECT_SECONDS), 0.5
        while True:
            try:
                connection = dialect.loaded_dbapi.connect(*cargs, **cparams)
                unreachable = False
                return connection
            except dialect.loaded_dbapi.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    unreachable = True
                    raise StorageUnavailable(
                        f"STORAGE {mask(url)}: database unreachable for {RECONNECT_SECONDS:.0f}s, "
                        f"stopping ({_reason(exc, url)})"
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 8.0)


def _check_mysql_answers(url: str, parsed: URL, shown: str) -> None:
    """One connection whose reads time out after ``CONNECT_SECONDS``: a port that speaks another
    protocol (no MySQL greeting) fails now, not after the read timeout of a storage connection."""
    args = {**server_connect_args("mysql"), "read_timeout": CONNECT_SECONDS}
    engine = sqlalchemy.create_engine(url, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as exc:
        if exc.orig.args[:1] != (2013,) or "timed out" not in str(exc.orig):  # connected, no greeting
            raise
        raise UsageError(f"STORAGE {shown}: no MySQL server answered at {parsed.host}:{parsed.port or 3306} "
                         f"within {CONNECT_SECONDS}s (another protocol's port?)") from None
    finally:
        engine.dispose()


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


def _retry(settings: Storage) -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """A trial whose heartbeat went stale is failed and run again, ``max_retry`` times at most."""
    with warnings.catch_warnings():  # experimental in Optuna since 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=settings.max_retry)


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
                heartbeat_stale_trial_callback=_retry(settings),
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
        if parsed.get_backend_name() == "mysql":
            _check_mysql_answers(rendered, parsed, shown)
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
    elif parsed.get_backend_name() == "postgresql":
        event.listen(rdb.engine, "begin", _statement_timeout)
    _retry_connects(rdb.engine, url)
    return StudyStorage(url, rdb, read_only)


def _pgbouncer_settings(parsed: URL) -> dict[str, str] | None:
    """PgBouncer's settings (``SHOW CONFIG``, and ``clients`` in use) if ``parsed`` points at a
    PgBouncer whose console lets this user read them, ``{}`` if it points at one that does not,
    and None if it points at PostgreSQL itself."""
    dialect = sqlalchemy.create_engine(parsed).dialect  # psycopg, no connection made
    cargs, cparams = dialect.create_connect_args(parsed.set(database="pgbouncer"))
    try:
        connection = dialect.loaded_dbapi.connect(
            *cargs, **{**cparams, "connect_timeout": CONNECT_SECONDS, "prepare_threshold": None,
                       "autocommit": True})
    except dialect.loaded_dbapi.OperationalError as exc:
        return {} if "not allowed" in str(exc) else None  # PostgreSQL: no database "pgbouncer"
    with connection:
        try:
            settings = {row[0]: str(row[1]) for row in connection.execute("SHOW CONFIG").fetchall()}
            lists = {row[0]: str(row[1]) for row in connection.execute("SHOW LISTS").fetchall()}
        except dialect.loaded_dbapi.Error:
            return {}
    return {**settings, "clients": lists.get("used_clients", "0")}


def _server_room(connection: sqlalchemy.Connection, backend: str) -> tuple[int, str]:
    """Connections the server takes still, and how that was read (for the message)."""
    if backend == "postgresql":
        limit, reserved, in_use, superuser = connection.exec_driver_sql(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true), '0')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
        ).one()
        reserved = 0 if superuser else reserved
        return limit - reserved - in_use, (
            f"PostgreSQL's max_connections {limit}, {reserved} reserved, {in_use} in use")
    limit = connection.exec_driver_sql("SELECT @@max_connections").scalar_one()
    in_use = int(connection.exec_driver_sql("SHOW GLOBAL STATUS LIKE 'Threads_connected'").one()[1])
    return limit - in_use, f"MySQL's max_connections {limit}, {in_use} in use"


def check_connection_room(storage: StudyStorage, workers: int) -> None:
    """Before any worker starts: one line (exit 2) if ``workers`` worker processes would not fit
    in the connections that the server (or the PgBouncer in front of it) takes still.

    Through PgBouncer the server's limit is not the workers' limit: workers are PgBouncer's
    clients (``max_client_conn``), and it lends them at most its pool of server connections, one
    per transaction. So the check is on PgBouncer's clients, where its console lets this user read
    them (``admin_users`` or ``stats_users``), and none otherwise. It is a check, not a
    reservation: commands starting at the same moment each see the room before the others' take it.
    """
    parsed = make_url(storage.url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" or workers <= 1:  # one worker runs in the command, already connected
        return
    needed = workers * WORKER_CONNECTIONS
    with storage_reason(storage):
        pooler = _pgbouncer_settings(_parse(storage.url)) if backend == "postgresql" else None
        if pooler is None:
            with storage.rdb.engine.connect() as connection:
                room, told = _server_room(connection, backend)
            remedy = ("run fewer WORKERS, or put PgBouncer in transaction pooling in front of it"
                      if backend == "postgresql" else "run fewer WORKERS, or raise max_connections")
            remedy += f" ({POOLER_DOCS})"
        elif "max_client_conn" in pooler:
            limit, in_use = int(pooler["max_client_conn"]), int(pooler["clients"])
            room, told = limit - in_use, f"PgBouncer's max_client_conn {limit}, {in_use} clients in use"
            remedy = f"run fewer WORKERS, or raise PgBouncer's max_client_conn ({POOLER_DOCS})"
        else:
            return
    if needed > room:
        raise UsageError(
            f"STORAGE {storage.masked}: {workers} workers need up to {needed} connections, "
            f"{max(room, 0)} are free ({told}); {remedy}"
        )


@contextmanager
def storage_reason(storage: StudyStorage) -> Iterator[None]:
    """A database error inside is one line (exit 2): the command has not started yet."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise UsageError(f"STORAGE {storage.masked}: cannot read its connection limit ({storage.reason(exc)})") from None
