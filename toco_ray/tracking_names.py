"""Where MLflow runs go when a command line does not say: the environment variables read (MLflow's own), the default
experiment, the embedded store's files, the two resolutions they take part in, a missing local store, and where the
UI of a store is.

Kept apart from :mod:`toco_ray.tracking` (which re-exports every name here) because command lines need these names
to print their ``--help``, and ``tracking`` loads MLflow's client, a second or more.

Example:
    >>> resolve_experiment("", DEFAULT_EXPERIMENT)  # $MLFLOW_EXPERIMENT_NAME unset
    'toco-ray'
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"  # MLflow's own variable; the experiment when no --experiment is given
DEFAULT_EXPERIMENT = "toco-ray"  # training runs (and inference runs of a training run in another store)
DB_FILE = "mlflow.db"  # the embedded store: <output dir>/mlflow.db ...
ARTIFACT_DIR = "mlartifacts"  # ... with artifacts in <output dir>/mlartifacts


def resolve_tracking_uri(output_dir: str | os.PathLike) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<abs output_dir>/mlflow.db``."""
    env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if env:
        return env
    return f"sqlite:///{Path(output_dir).resolve() / DB_FILE}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a local SQLite store, else None (a server, or another database)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def missing_store(uri: str, output_dir: str) -> str | None:
    """What is wrong when ``uri`` is an SQLite store whose file does not exist (opening it would create an empty
    store, and its folder), else None. For the commands that read a sweep back."""
    database = sqlite_file(uri)
    if database is None or database.is_file():
        return None
    if os.environ.get(TRACKING_URI_ENV, "").strip():
        return (f"no MLflow store at {database} ({TRACKING_URI_ENV}={uri}); point {TRACKING_URI_ENV} at the store "
                "the sweep logged to")
    return (f"no MLflow store at {database}; is --output-dir ({output_dir}) the one the sweep ran with? (or set "
            f"{TRACKING_URI_ENV})")


def resolve_experiment(explicit: str, default: str) -> str:
    """The MLflow experiment of a new run: ``explicit`` (``--experiment``) if given, else ``$MLFLOW_EXPERIMENT_NAME``
    if set, else ``default`` (the command's own: ``toco-ray``, ``toco-sweep-<space>`` ...)."""
    return explicit.strip() or os.environ.get(EXPERIMENT_ENV, "").strip() or default


HTTP_SCHEMES = ("http", "https")
UI_DEFAULT = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


def ui_base(uri: str) -> str:
    """The UI of a tracking server is the server itself; a local store's is what ``mlflow ui`` serves."""
    return uri.rstrip("/") if urllib.parse.urlparse(uri).scheme in HTTP_SCHEMES else UI_DEFAULT
