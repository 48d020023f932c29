"""The storage layer: SQLAlchemy URLs checked up front, Optuna's RDBStorage with heartbeats,
and the artifact store beside it."""

from __future__ import annotations

import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import optuna
import sqlalchemy
from optuna.artifacts import FileSystemArtifactStore
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url

from search.config import Storage
from search.errors import StorageUnavailable, UsageError

DEFAULT_URL = "sqlite:///storage/optuna.db"
RECONNECT_SECONDS = 60.0
# What a failing storage raises: the driver's error, Optuna's wrapping of it, or our own.
STORAGE_ERRORS = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, StorageUnavailable)
# A bare dialect means SQLAlchemy's default driver (psycopg2, mysqlclient), which we don't ship.
INSTALLED_DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}


def mask(url: str) -> str:
    """The URL with any password replaced by ``***``; safe for logs, errors and exports."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


def _parse(url: str) -> URL:
    """The URL, with ``postgresql://`` read as ``postgresql+psycopg://`` (psycopg 3), and so on."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UsageError(f"STORAGE {mask(url)!r} is not a SQLAlchemy URL (e.g. {DEFAULT_URL})") from None
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
    password = make_url(url).password
    return line.replace(str(password), "***") if password else line


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


def artifact_store(path: str | Path) -> FileSystemArtifactStore:
    """The folder where trials' files (curves, histories) live, as Optuna's artifact store."""
    Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def _engine_kwargs(url: URL) -> dict:
    kwargs: dict = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 60}  # wait on a locked database, don't fail
    else:
        kwargs["connect_args"] = {"connect_timeout": 10}
    return kwargs


def _wal(dbapi_connection: object, record: object) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")  # type: ignore[attr-defined]


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
    if parsed.get_backend_name() == "sqlite":  # WAL: readers don't wait for the writer
        event.listen(rdb.engine, "connect", _wal)
        rdb.engine.dispose()  # so that every pooled connection is opened in WAL mode
    _retry_connects(rdb.engine, url)
    return StudyStorage(url, rdb, read_only)
