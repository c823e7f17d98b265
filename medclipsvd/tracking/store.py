"""Where runs go: the tracking URI (default: a SQLite database and artefact folder under ./mlruns), the local
outbox for runs that could not reach the server, and the probe that refuses to start against a dead server."""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from medclipsvd.errors import TrackingError  # TrackingError lives in errors.py so serving can raise it

LOCAL_DIR = "mlruns"
LOCAL_DB = "mlflow.db"
LOCAL_ARTIFACTS = "artifacts"
OUTBOX = "outbox"
DEFAULT_EXPERIMENT = "medclipsvd"

# MLflow's HTTP defaults (7 retries, exponential back-off, 120 s timeout) make one call to a dead server hang
# for minutes; training must not stall like that, so unless the user set them we retry briefly.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def local_root(cwd: str | os.PathLike | None = None) -> Path:
    return Path(cwd or os.getcwd()).resolve() / LOCAL_DIR


def default_tracking_uri(cwd: str | os.PathLike | None = None) -> str:
    """sqlite:///<cwd>/mlruns/mlflow.db (absolute, so a later `cd` does not lose the store)."""
    return f"sqlite:///{local_root(cwd) / LOCAL_DB}"


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the local store under ./mlruns."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):", uri)  # two letters at least: C:\ is a Windows path
    if scheme and scheme.group(1).split("+")[0].lower() not in _SCHEMES:
        raise TrackingError(f"tracking URI {display_uri(uri)}: MLflow cannot store runs at a {scheme.group(1)}: "
                            f"URI (it takes {', '.join(s + ':' for s in _SCHEMES)} or a folder path). Nothing was "
                            "run. Fix: correct --tracking-uri / MLFLOW_TRACKING_URI, or pass --no-mlflow.")
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(sqlite_message(uri, f"its folder {db.parent} cannot be created "
                                                    f"({exc.strerror or exc})")) from None
    check_database(uri)
    return uri


# What MLflow's tracking and registry stores accept (mlflow.tracking._model_registry.utils); anything else
# fails deep inside MLflow with an exception about "model registry functionality".
_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")

# Database stores MLflow reaches through SQLAlchemy (sqlite has its own checks, from the file system).
_DB_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")
DB_CONNECT_TIMEOUT_S = 10


def check_database(uri: str, timeout: int = DB_CONNECT_TIMEOUT_S) -> None:
    """One connection attempt, bounded by ``timeout`` seconds, to a database tracking store: MLflow itself
    retries a database it cannot reach for about 100 s and then fails with the driver's exception. A
    TrackingError names the URI (password hidden), the problem and what to do."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in _DB_SCHEMES:
        return
    try:
        import sqlalchemy
    except ImportError:  # MLflow needs it for database stores: the message below says so
        sqlalchemy = None
    problem = None
    try:
        if sqlalchemy is None:
            raise ImportError("sqlalchemy is not installed")
        args = {"connect_timeout": timeout} if scheme in ("postgresql", "mysql") else {}
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except ImportError as exc:
        problem = f"its database driver is not installed ({_first_line(exc)}); install it (e.g. psycopg2-binary)"
    except Exception as exc:  # drivers raise their own kinds; all mean "cannot connect" here
        problem = f"cannot connect ({type(exc).__name__}: {_first_line(exc)}; one try of at most {timeout} s)"
    if problem:
        raise TrackingError(f"MLflow database store {display_uri(uri)} cannot be used: {display_uri(problem)}. "
                            f"Nothing was run. Fix: start the database or correct --tracking-uri / "
                            f"MLFLOW_TRACKING_URI, or pass --no-mlflow to run without tracking.")


def configured_uri() -> str:
    """The tracking URI a journal must have been recorded with to be uploaded without --to."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` URI (None for other stores and in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def sqlite_message(uri: str, problem: str) -> str:
    return (f"MLflow store {display_uri(uri)} cannot be used: {problem}. Nothing was run. Fix: pass --tracking-uri "
            f"sqlite:////A/WRITABLE/FOLDER/mlflow.db (or set MLFLOW_TRACKING_URI), or work from a writable folder "
            f"(the default store is ./{LOCAL_DIR}), or pass --no-mlflow to run without tracking.")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):  # no statvfs (Windows): os.access below still answers
        return False


def check_sqlite_writable(uri: str) -> None:
    """A SQLite store must be writable (the database, and its folder for SQLite's journal). Checked from the
    file system, without opening the database: MLflow would retry a read-only one for about two minutes and
    then the message would be about a server."""
    db = sqlite_path(uri)
    if db is None:
        return
    folder = db.parent if str(db.parent) else Path(".")
    if _read_only_fs(folder):
        problem = f"{folder} is on a read-only file system"
    elif db.exists() and not os.access(db, os.R_OK | os.W_OK):
        problem = f"the database {db} is not writable for this user"
    elif not os.access(folder, os.W_OK | os.X_OK):
        problem = f"its folder {folder} is not writable for this user (SQLite writes a journal beside the database)"
    else:
        return
    raise TrackingError(sqlite_message(uri, problem))


def is_local_store(uri: str) -> bool:
    return uri.startswith("sqlite:") and Path(uri.removeprefix("sqlite:///")).parent == local_root()


def default_artifact_location(uri: str, experiment: str) -> str | None:
    """For the local SQLite store, artefacts live beside the database; servers choose their own."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / LOCAL_ARTIFACTS / experiment).as_uri()
    return None


def outbox_dir(outbox: str | os.PathLike | None = None) -> Path:
    """Runs that did not reach their server wait here for `medclipsvd sync`."""
    if outbox is not None:
        return Path(outbox).resolve()
    env = os.environ.get("MEDCLIPSVD_OUTBOX")
    return Path(env).resolve() if env else local_root() / OUTBOX


# MLflow's own INFO lines (database migrations, "View run at ..."), artefact progress bars and the run URL it
# prints are noise in a CLI whose output users read; warnings and errors still come through.
_QUIET_DEFAULTS = {
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


def configure_http() -> None:
    """Short HTTP retries (see _HTTP_DEFAULTS) and a quiet MLflow; every entry point calls this first."""
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    quiet_mlflow()


def quiet_mlflow() -> None:
    """Keep MLflow's INFO chatter out of our output unless the user set MLFLOW_LOGGING_LEVEL."""
    import logging

    user_level = os.environ.get("MLFLOW_LOGGING_LEVEL")
    for key, value in _QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if user_level is None:  # MLflow reads the variable at import; set the level too if it was imported already
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _auth() -> tuple[dict, tuple | None]:
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return headers, (user, password) if user and password else None


def display_uri(uri: str) -> str:
    """The URI with any password replaced by ***, for messages and files."""
    return re.sub(r"(//[^/:@]+:)[^/@]+@", r"\1***@", uri)


def unreachable_message(uri: str, problem: str) -> str:
    uri = display_uri(uri)
    return (f"MLflow tracking server {uri} cannot be used: {problem}. Nothing was run. Fix: start the server "
            f"(e.g. `mlflow server --host 127.0.0.1 --port 5000 --backend-store-uri sqlite:///mlflow.db`), or "
            f"correct --tracking-uri / MLFLOW_TRACKING_URI, or leave both unset to track into ./{LOCAL_DIR}, "
            "or pass --no-mlflow to run without tracking.")


def probe(uri: str, timeout: float = 10.0) -> None:
    """Raise TrackingError (with the URI and the fix) unless `uri` answers as an MLflow tracking store."""
    if uri.startswith(("http://", "https://")):
        import requests

        headers, auth = _auth()
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search"
        try:
            resp = requests.get(url, params={"max_results": 1}, headers=headers, auth=auth, timeout=timeout)
        except requests.RequestException as exc:
            raise TrackingError(unreachable_message(uri, f"no answer ({type(exc).__name__})")) from None
        if resp.status_code in (401, 403):
            raise TrackingError(f"MLflow tracking server {display_uri(uri)} refused the credentials (HTTP {resp.status_code}). "
                                "Nothing was run. Fix: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                                "(or MLFLOW_TRACKING_TOKEN) to an account of that server.")
        if resp.status_code != 200:
            raise TrackingError(unreachable_message(uri, f"it answered HTTP {resp.status_code} to the MLflow API "
                                                         "(is this the server's address, with its path prefix?)"))
        return
    check_sqlite_writable(uri)  # before MLflow is imported: seconds, not minutes of retries
    from mlflow import MlflowClient

    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:  # database drivers raise many kinds; all mean the same to the user
        problem = f"{type(exc).__name__}: {display_uri(_first_line(exc))}"
        raise TrackingError(sqlite_message(uri, problem) if sqlite_path(uri) is not None
                            else unreachable_message(uri, problem)) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# OS errors that mean "the disk cannot take the files" (a full or read-only store), as opposed to a lost
# server: the first is the user's to fix, the second passes
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)
_DISK_WORDS = ("No space left on device", "Disk quota exceeded", "Read-only file system")


def disk_error(exc: BaseException) -> OSError | str | None:
    """The full/read-only-disk error behind `exc` (an OSError, or the words of a server that hit one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            return exc
        if any(w in str(exc) for w in _DISK_WORDS):
            return next(w for w in _DISK_WORDS if w in str(exc))
        exc = exc.__cause__ or exc.__context__
    return None
