"""MLflow tracking: where runs go, how they are found again, and what each one records.

The tracking URI is ``$MLFLOW_TRACKING_URI`` when set, otherwise an embedded default under the output folder:
``sqlite:///<output>/mlflow.db`` with artifacts in ``<output>/mlartifacts`` (MLflow's file store is deprecated).
:func:`check_tracking_uri` fails fast, before any Ray worker starts, when the store cannot be reached.

A training run is found again by its name (the tag ``toco.run_name``), so resuming a run keeps logging into the
same MLflow run. :class:`RunLogger` is what rank 0 logs through; it never logs a metric twice for the same step,
so a run that restarts from a checkpoint replays its iterations without duplicating or leaving gaps in the
metric history.

Example:
    >>> uri = resolve_tracking_uri("outputs")            # sqlite:////abs/outputs/mlflow.db unless overridden
    >>> check_tracking_uri(uri)                          # raises TrackingError if unreachable
    >>> run_id = start_run(uri, "toco-ray", "toco-synthetic-20250101-120000", artifact_root("outputs"))
    >>> logger = RunLogger(uri, run_id)
    >>> logger.log_metrics({"loss/total": 1.2}, step=20)
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import PIL.Image
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

from toco_ray.errors import TocoError
from toco_ray.tracking_names import (  # noqa: F401 (re-exported: they live apart so command lines skip MLflow)
    ARTIFACT_DIR,
    DB_FILE,
    DEFAULT_EXPERIMENT,
    EXPERIMENT_ENV,
    HTTP_SCHEMES,
    TRACKING_URI_ENV,
    resolve_experiment,
    resolve_tracking_uri,
    sqlite_file,
    ui_base,
)

COMMAND_TAG = "command"  # the command that started the run (a sweep trial's: the sweep driver's)
RUN_NAME_TAG = "toco.run_name"  # the Ray Train run name; the key a resumed run is found by
MLFLOW_DB_LOGGER = "mlflow.store.db.utils"
PROBE_TIMEOUT_S = 5.0  # reachability check of a tracking server; MLflow's own client retries for minutes
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# MLflow's batch limits (mlflow.utils.validation): 100 params/tags and 1000 metrics per request
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_PARAM_LENGTH = 6000
FIGURE_DPI = 100  # a run's figures: a 21-class confusion matrix's labels at 9 pt are 12 px
# MLflow 3 opens an experiment on its GenAI pages unless the link asks for the runs view; the experiment-kind tag
# stops the UI asking what kind of experiment it is
RUNS_VIEW = "workflowType=machine_learning"  # the query that keeps a link in the UI's model-training section
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
VERSIONED_PACKAGES = ("torch", "torchvision", "timm", "ray", "mlflow", "numpy", "toco-ray")


class TrackingError(TocoError, RuntimeError):
    """The tracking store cannot be reached or used; the message names the URI and what to do."""


# --- where runs go --------------------------------------------------------------------------------
def artifact_root(output_dir: str | os.PathLike) -> str:
    """Artifact location for experiments created in the embedded store: ``<abs output_dir>/mlartifacts``."""
    return str(Path(output_dir).resolve() / ARTIFACT_DIR)


def store_folder(uri: str) -> Path | None:
    """The folder of a local SQLite store, the output root its runs' paths are relative to; None for a server."""
    database = sqlite_file(uri)
    return database.parent if database is not None else None


def path_tag(path: str | os.PathLike, uri: str) -> str:
    """A path as a run's tag records it: relative to the local store's folder when inside it (short in the UI,
    and still right when the output folder moves with its store), else absolute (a server's runs live elsewhere)."""
    folder, path = store_folder(uri), Path(path).resolve()
    if folder is not None and path.is_relative_to(folder.resolve()):
        return str(path.relative_to(folder.resolve()))
    return str(path)


def tagged_path(text: str, uri: str) -> Path:
    """The path a :func:`path_tag` names, for the store at ``uri`` (a relative one without a local store: from the
    working directory)."""
    path = Path(text)
    return path if path.is_absolute() else (store_folder(uri) or Path.cwd()) / path


def is_local_store(uri: str) -> bool:
    """True for the embedded SQLite store, whose experiments get the artifact root under the output folder."""
    return urllib.parse.urlparse(uri).scheme == "sqlite"


def check_tracking_uri(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Checks that ``uri`` can be used, quickly, and raises :class:`TrackingError` saying why not.

    http(s): a GET on the server's ``/health`` (then on the REST API) must answer within ``timeout_s``.
    sqlite: the database folder must exist or be creatable, and be writable. Other database URIs: a client call
    must answer within ``timeout_s``. ``file:`` stores are refused (deprecated in MLflow 3).
    """
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme in HTTP_SCHEMES:
        _probe_http(uri, timeout_s)
    elif scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in DB_SCHEMES or scheme.startswith(tuple(f"{s}+" for s in DB_SCHEMES)):
        _probe_client(uri, timeout_s)
    elif scheme in ("", "file"):
        raise TrackingError(
            f"MLflow tracking URI {uri!r} is a file store, which MLflow 3 deprecates; use a database "
            f"(sqlite:///path/mlflow.db) or a server (http://host:5000), or unset {TRACKING_URI_ENV}"
        )
    else:
        raise TrackingError(
            f"MLflow tracking URI {uri!r} has unsupported scheme {scheme!r}; expected http(s)://, sqlite:/// "
            f"or a database URI ({', '.join(DB_SCHEMES)})"
        )


def _probe_http(uri: str, timeout_s: float) -> None:
    base = uri.rstrip("/")
    probes = (f"{base}/health", f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
    last_error = ""
    for url in probes:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                if response.status < 400:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            last_error = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            last_error = str(getattr(err, "reason", err))
    raise TrackingError(
        f"MLflow tracking server {uri} is not reachable ({last_error}); start it (mlflow server ...) or set "
        f"{TRACKING_URI_ENV} to a reachable server, or unset it to use the embedded SQLite store"
    )


def _check_sqlite(uri: str) -> None:
    # MLflow announces at INFO level that it creates and upgrades a new store's tables: two lines of no consequence
    logging.getLogger(MLFLOW_DB_LOGGER).setLevel(logging.WARNING)
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        raise TrackingError(f"MLflow tracking URI {uri!r}: expected sqlite:///<path to a database file>")
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(f"MLflow database folder {folder} cannot be created ({err.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrackingError(f"MLflow database folder {folder} is not writable (tracking URI {uri})")
    if Path(path).exists():
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                db.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as err:
            raise TrackingError(
                f"MLflow database {path} is not an SQLite database ({err}); point {TRACKING_URI_ENV} at the store, "
                "or move the file away"
            ) from None


def _probe_client(uri: str, timeout_s: float) -> None:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(lambda: MlflowClient(tracking_uri=uri).search_experiments(max_results=1))
    try:
        future.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise TrackingError(f"MLflow tracking store {uri} did not answer within {timeout_s:.0f} s") from None
    except Exception as err:  # any driver or connection error means the store cannot be used
        raise TrackingError(f"MLflow tracking store {uri} cannot be used: {err}") from None
    finally:
        pool.shutdown(wait=False)


# --- runs -----------------------------------------------------------------------------------------
def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """Experiment id of ``name``, created (with ``artifact_location`` if given, and the experiment-kind tag) when
    missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location,
                                     tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


# --- links into the MLflow UI -----------------------------------------------------------------------
def runs_view_url(uri: str, experiment_id: str) -> str:
    """The link that opens an experiment on its runs table (not MLflow 3's GenAI overview)."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs?{RUNS_VIEW}"


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """A run's page; without the runs view's query MLflow 3 shows it among its GenAI pages (as an evaluation run)."""
    return f"{ui_base(uri)}/#/experiments/{experiment_id}/runs/{run_id}?{RUNS_VIEW}"


def ui_hint(uri: str, experiment_id: str) -> str:
    """One line for the console: the runs-view link, and for a local store the command that serves it."""
    line = f"MLflow: {runs_view_url(uri, experiment_id)}"
    return line if not is_local_store(uri) else f"{line}  (serve it: mlflow ui --backend-store-uri {uri})"


def run_ui_hint(uri: str, run_id: str) -> str:
    """:func:`ui_hint` for the experiment of ``run_id``."""
    return ui_hint(uri, MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id)


def find_run(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    """Id of the run tagged ``toco.run_name = run_name`` in the experiment, or None."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = {quote_filter(run_name)}",
                              max_results=1)
    return runs[0].info.run_id if runs else None


def quote_filter(value: str) -> str:
    """``value`` as a string literal of an MLflow filter: in the quote it does not contain.

    MLflow's filter grammar has no escape inside a quoted value, so a value holding both quote characters cannot be
    searched for; callers keep names to a safe alphabet (:mod:`toco_ray.names`) anyway.
    """
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise TrackingError(f"cannot search MLflow for {value!r}: it holds both quote characters")


def start_run(
    uri: str,
    experiment: str,
    run_name: str,
    artifact_location: str | None = None,
    resume: bool = False,
    tags: Mapping[str, str] | None = None,
    title: str = "",
) -> str:
    """Creates the MLflow run for ``run_name`` (or finds it again when resuming) and returns its id.

    Args:
        uri: tracking URI.
        experiment: experiment name (created if missing).
        run_name: the training run's name, unique per run.
        artifact_location: artifact root for a new experiment (embedded store only; servers choose their own).
        resume: find the existing run; a missing one raises :class:`TrackingError`.
        tags: extra tags, e.g. ``{"mlflow.parentRunId": ...}`` for a sweep's child run.
        title: the display name in the MLflow UI (default ``run_name``); the run is found by ``run_name`` alone.
    """
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_or_create_experiment(client, experiment, artifact_location)
    existing = find_run(client, experiment_id, run_name)
    if resume:
        if existing is None:
            raise TrackingError(
                f"no MLflow run named {run_name!r} in experiment {experiment!r} at {uri}; cannot resume it"
            )
        client.update_run(existing, status=RunStatus.to_string(RunStatus.RUNNING))
        return existing
    if existing is not None:
        raise TrackingError(
            f"an MLflow run named {run_name!r} already exists in experiment {experiment!r}; "
            "pick another run name or resume it"
        )
    run = client.create_run(experiment_id, run_name=title or run_name, tags={RUN_NAME_TAG: run_name, **(tags or {})})
    return run.info.run_id


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Marks the run ``FINISHED``, ``FAILED`` or ``KILLED``."""
    MlflowClient(tracking_uri=uri).set_terminated(run_id, status=status)


# --- what a run records -----------------------------------------------------------------------------
class RunLogger:
    """Logs into one MLflow run; each metric key is logged at most once per step.

    On construction it reads, per metric key, the highest step already logged (a run resumed from a checkpoint
    replays iterations that were logged before the failure); :meth:`log_metrics` skips those steps.

    Args:
        uri: tracking URI.
        run_id: the run to log into (from :func:`start_run`).
    """

    def __init__(self, uri: str, run_id: str):
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = run_id
        self.last_step = self._logged_steps()

    def _logged_steps(self) -> dict[str, int]:
        keys = self.client.get_run(self.run_id).data.metrics.keys()
        return {key: max(m.step for m in self.client.get_metric_history(self.run_id, key)) for key in keys}

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> dict[str, float]:
        """Logs ``metrics`` at ``step``, skipping keys already logged at or after it; returns what was logged."""
        fresh = {k: float(v) for k, v in metrics.items() if step > self.last_step.get(k, -1)}
        now = int(time.time() * 1000)
        entries = [Metric(key, value, now, step) for key, value in fresh.items()]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=chunk)
        self.last_step.update(dict.fromkeys(fresh, step))
        return fresh

    def log_params(self, params: Mapping[str, Any], allow_changes: bool = False) -> None:
        """Logs params not logged yet.

        MLflow params are immutable: a value that differs from the logged one raises, unless ``allow_changes``
        (a resumed run given new overrides), which records it as the tag ``changed.<key>`` instead.
        """
        logged = self.client.get_run(self.run_id).data.params
        entries, changed = [], {}
        for key, value in params.items():
            text = _param_text(value)
            if key not in logged:
                entries.append(Param(key, text))
            elif logged[key] != text:
                if not allow_changes:
                    raise TrackingError(
                        f"param {key!r} of MLflow run {self.run_id} is {logged[key]!r}; cannot change it to {text!r}"
                    )
                changed[f"changed.{key}"] = f"{logged[key]} -> {text}"
        for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=chunk)
        if changed:
            self.set_tags(changed)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        entries = [RunTag(k, str(v)) for k, v in tags.items()]
        for chunk in _chunks(entries, MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=chunk)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, data, artifact_file)

    def log_figure(self, figure, artifact_file: str, key: str | None = None, step: int | None = None) -> None:
        """Logs a matplotlib figure as a PNG artifact; with ``key``, the same picture also as an MLflow image at
        ``step``, which the UI shows in an image grid with a step slider, comparable across runs."""
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        folder = str(Path(artifact_file).parent)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / Path(artifact_file).name
            path.write_bytes(buffer.getvalue())
            self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        if key is not None:
            self.client.log_image(self.run_id, PIL.Image.open(buffer), key=key, step=step)

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _param_text(value: Any) -> str:
    text = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
    return text[:MAX_PARAM_LENGTH]


def run_params(flat_config: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """MLflow params: the flattened config plus run-level values (global batch, world size, ...)."""
    return {**flat_config, **{f"run.{k}": v for k, v in extra.items()}}


# --- provenance -------------------------------------------------------------------------------------
def provenance_tags(repo_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """Tags recording what ran: git commit (and whether the tree was dirty), package versions, host."""
    tags = {f"version.{name}": _version(name) for name in VERSIONED_PACKAGES}
    tags["version.python"] = platform.python_version()
    tags["host.platform"] = platform.platform()
    tags["host.cpu_count"] = str(os.cpu_count())
    commit, dirty = git_state(repo_dir or Path(__file__).resolve().parent.parent)
    tags["git.commit"] = commit
    tags["git.dirty"] = str(dirty).lower()
    tags["mlflow.source.git.commit"] = commit
    tags[COMMAND_TAG] = command_line()
    return tags


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``python -m pipelines.sweep space.yaml`` for a module run with ``-m`` (whose argv[0] is
    the module's file), else the interpreter's name and argv."""
    argv = list(sys.argv if argv is None else argv)
    head = Path(argv[0]) if argv else Path("")
    if head.suffix == ".py" and head.parent.name == "pipelines":
        argv[0] = f"-m pipelines.{head.stem}"
    return " ".join(["python", *argv])[:MAX_PARAM_LENGTH]


def git_state(repo_dir: str | os.PathLike) -> tuple[str, bool]:
    """(commit hash or "unknown", True if the working tree has uncommitted changes)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return commit, bool(status.strip())


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def device_tags(device_names: list[str]) -> dict[str, str]:
    """``device.rank<r>`` per rank plus ``device.names``, the distinct names with their counts."""
    tags = {f"device.rank{r}": name for r, name in enumerate(device_names)}
    counts: dict[str, int] = {}
    for name in device_names:
        counts[name] = counts.get(name, 0) + 1
    tags["device.names"] = ", ".join(f"{n}× {name}" for name, n in counts.items())
    return tags
