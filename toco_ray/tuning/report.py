"""Sweep reports: the paper's Table 4/5 layout (M, M^m, Seg) from a sweep's MLflow runs, with plots.

Everything comes from MLflow: the parent run (found by run id, sweep name or experiment name) carries the search
space as an artifact and the Optuna study's location as tags; each child run is one trial, with its row label and
seed as tags and its metric history. A grid sweep gives one row per ablation setting, mean ± sample std over seeds,
the paper's numbers beside it (``toco_ray/tuning/paper.py``) and a bar chart; an Optuna sweep lists every trial by
objective, with Optuna's optimisation-history and parameter-importance plots. Every report lists every trial, and
accounts for time: the sweep's wall time, trials per hour and the share of it spent outside training steps.

Columns follow the paper: ``M`` = final CAM mIoU, ``M^m`` = auxiliary CAM mIoU, ``Seg`` = segmentation mIoU (%),
each the trial's last in-training evaluation. A column is "–" for a row that does not train it (``M^m`` without the
auxiliary loss, ``Seg`` without the seg loss), as in Table 4.

Example:
    >>> report = build_report(MlflowClient("sqlite:///outputs/mlflow.db"), "toco-sweep-quick_demo")
    >>> paths = write_report(report, Path("outputs/sweeps/quick_demo/report"))
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toco_ray.config import yaml_load
from toco_ray.errors import TocoError
from toco_ray.tracking import quote_filter
from toco_ray.tuning import paper
from toco_ray.tuning.space import SearchSpace, parse_space
from toco_ray.tuning.trial import (
    OPTUNA_NUMBER_TAG,
    REPORTED_TAG,
    ROLE_TAG,
    ROW_TAG,
    SEED_TAG,
    STOPPED_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
)

COLUMN_METRICS = {"M": "eval/cam_miou", "M^m": "eval/aux_cam_miou", "Seg": "eval/seg_miou"}
# A column applies to a trial only when the loss that trains it is on (Table 4 leaves the others empty).
COLUMN_WEIGHTS = {"M^m": "loss.w_cls_aux", "Seg": "loss.w_seg"}
OBJECTIVE_COLUMN = {"cam_miou": "M", "aux_cam_miou": "M^m", "seg_miou": "Seg"}
THROUGHPUT_METRIC = "throughput/images_per_s"
WALL_METRIC = "sweep/wall_s"
REPORT_DIR = "report"
DASH = "–"


class ReportError(TocoError, LookupError):
    """The sweep cannot be found or read; the message says what was looked for."""


@dataclass
class TrialRecord:
    """One trial as MLflow recorded it.

    Attributes:
        values: ``{column: mIoU %}`` at the last evaluation; ``None`` where the column does not apply.
        iteration: the step of the last evaluation.
        wall_s: the run's start-to-end time; train_s: time inside training steps (from the logged throughput).
    """

    run_id: str
    run_name: str
    status: str
    label: str
    seed: str
    trial_id: str
    optuna_number: int | None
    stopped_early: bool
    reused: bool
    params: dict[str, str]
    values: dict[str, float | None]
    iteration: int
    wall_s: float
    train_s: float


@dataclass
class AblationRow:
    """One row of an ablation table: a setting, its numbers over seeds, and the paper's."""

    label: str
    seeds: list[str]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    paper_row: str = ""
    paper_values: dict[str, float | None] = field(default_factory=dict)


@dataclass
class TimeAccount:
    """Where a sweep's wall time went."""

    wall_s: float
    trials: int
    max_concurrent: int
    trial_wall_s: float
    train_s: float

    @property
    def trials_per_hour(self) -> float:
        return self.trials / self.wall_s * 3600 if self.wall_s > 0 else math.nan

    @property
    def outside_share(self) -> float:
        """1 − (time in training steps) / (wall time × concurrent trials)."""
        capacity = self.wall_s * max(1, self.max_concurrent)
        return 1 - self.train_s / capacity if capacity > 0 else math.nan


@dataclass
class SweepReport:
    """Everything a report shows."""

    sweep_name: str
    parent_run_id: str
    experiment: str
    space: SearchSpace
    trials: list[TrialRecord]
    rows: list[AblationRow]
    time: TimeAccount
    sweep_dir: str
    dataset: str
    optuna: dict[str, str] = field(default_factory=dict)


# --- finding the sweep -------------------------------------------------------------------------------------------
def find_parent(client, target: str):
    """The parent run named by ``target``: a run id, a sweep name, or an experiment (its latest sweep)."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(target)
        if run.data.tags.get(ROLE_TAG) == "parent":
            return run
        parent_id = run.data.tags.get("mlflow.parentRunId")
        if parent_id:
            return client.get_run(parent_id)
    except MlflowException:
        pass
    experiments = client.search_experiments()
    ids = [e.experiment_id for e in experiments]
    by_experiment = [e.experiment_id for e in experiments if e.name == target]
    filters = [(by_experiment, f"tags.`{ROLE_TAG}` = 'parent'"),
               (ids, f"tags.`{SWEEP_TAG}` = {quote_filter(target)}")]
    for experiment_ids, filter_string in filters:
        if not experiment_ids:
            continue
        runs = client.search_runs(experiment_ids, filter_string=filter_string, order_by=["attributes.start_time DESC"],
                                  max_results=1)
        if runs:
            return runs[0] if runs[0].data.tags.get(ROLE_TAG) == "parent" else client.get_run(
                runs[0].data.tags["mlflow.parentRunId"])
    raise ReportError(
        f"no sweep found for {target!r}: not a parent or trial run id, a sweep name, or an MLflow experiment "
        f"with sweeps (experiments: {sorted(e.name for e in experiments)})"
    )


def load_space_of(client, parent) -> SearchSpace:
    """The search space the sweep ran, from the parent run's ``space/`` artifact."""
    with tempfile.TemporaryDirectory() as folder:
        local = Path(client.download_artifacts(parent.info.run_id, "space", folder))
        files = sorted(local.glob("*.yaml"))
        if not files:
            raise ReportError(f"parent run {parent.info.run_id} has no space/*.yaml artifact")
        text = files[0].read_text()
    return parse_space(yaml_load(text), name=parent.data.tags.get("toco.sweep.space", files[0].stem),
                       path=files[0].name, text=text)


def children(client, parent) -> list:
    """The parent's trial runs, oldest first."""
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = {quote_filter(parent.info.run_id)}",
                              order_by=["attributes.start_time ASC"], max_results=10000)
    return [r for r in runs if r.data.tags.get(ROLE_TAG, "trial") == "trial"]


# --- reading the trials ---------------------------------------------------------------------------------------
def trial_record(client, run) -> TrialRecord:
    """A child run's numbers: the last evaluation of each column, the time it spent training."""
    tags, params = run.data.tags, run.data.params
    values, iteration = {}, 0
    for column, metric in COLUMN_METRICS.items():
        history = client.get_metric_history(run.info.run_id, metric)
        last = max(history, key=lambda m: m.step) if history else None
        applies = float(params.get(COLUMN_WEIGHTS.get(column, ""), 1.0)) > 0
        values[column] = 100 * last.value if last is not None and applies else None
        iteration = max(iteration, last.step if last else 0)
    number = tags.get(OPTUNA_NUMBER_TAG)
    end = run.info.end_time or run.info.start_time
    return TrialRecord(
        run_id=run.info.run_id, run_name=run.info.run_name, status=run.info.status, label=tags.get(ROW_TAG, ""),
        seed=tags.get(SEED_TAG, params.get("train.seed", "")), trial_id=tags.get(TRIAL_ID_TAG, ""),
        optuna_number=int(number) if number is not None else None,
        stopped_early=tags.get(STOPPED_TAG, "false").startswith("true"), reused=tags.get(REPORTED_TAG) == "true",
        params=dict(params), values=values, iteration=iteration, wall_s=(end - run.info.start_time) / 1000,
        train_s=train_seconds(client, run.info.run_id, int(params.get("train.global_batch", 1))),
    )


def train_seconds(client, run_id: str, global_batch: int) -> float:
    """Time inside training steps: each logged period's iterations × global batch / its images per second."""
    history = sorted(client.get_metric_history(run_id, THROUGHPUT_METRIC), key=lambda m: m.step)
    total, previous = 0.0, 0
    for m in history:
        if m.value > 0:
            total += (m.step - previous) * global_batch / m.value
        previous = m.step
    return total


def ablation_rows(space: SearchSpace, trials: Sequence[TrialRecord]) -> list[AblationRow]:
    """One row per grid setting in sweep order: mean and sample std over seeds, the paper's numbers beside it."""
    labels = space.row_labels() or list(dict.fromkeys(t.label for t in trials))
    rows = []
    for label in labels:
        group = [t for t in trials if t.label == label]
        row = AblationRow(label, [t.seed for t in group], {}, {})
        for column in COLUMN_METRICS:
            values = [t.values[column] for t in group if t.values[column] is not None]
            row.mean[column] = statistics.fmean(values) if values else None
            row.std[column] = statistics.stdev(values) if len(values) > 1 else None
        if space.paper is not None:
            row.paper_row = space.paper.row_for(label)
            row.paper_values = paper.paper_row(space.paper.table, row.paper_row)
        rows.append(row)
    return rows


def time_account(client, parent, trials: Sequence[TrialRecord]) -> TimeAccount:
    """The sweep's wall time (all sessions) against the time its trials spent in training steps."""
    history = client.get_metric_history(parent.info.run_id, WALL_METRIC)
    if history:
        wall = max(history, key=lambda m: m.step).value
    else:  # no session ended cleanly (the driver was killed): from the sweep's start to its last trial's end
        ends = [parent.info.end_time or 0] + [
            1000 * t.wall_s + client.get_run(t.run_id).info.start_time for t in trials if t.wall_s]
        wall = max(0, max(ends) - parent.info.start_time) / 1000
    concurrent = int(parent.data.params.get("sweep.max_concurrent", 1))
    return TimeAccount(wall, len(trials), concurrent, sum(t.wall_s for t in trials), sum(t.train_s for t in trials))


def build_report(client, target: str) -> SweepReport:
    """Reads the sweep named by ``target`` (parent run id, sweep name or experiment) from MLflow."""
    parent = find_parent(client, target)
    space = load_space_of(client, parent)
    trials = [trial_record(client, run) for run in children(client, parent)]
    if space.kind == "optuna":
        trials.sort(key=lambda t: (t.optuna_number is None, t.optuna_number or 0))
    tags = parent.data.tags
    experiment = client.get_experiment(parent.info.experiment_id).name
    datasets = sorted({t.params.get("data.dataset", "") for t in trials} - {""})
    optuna = {k: tags[k] for k in ("optuna.storage", "optuna.study_name") if k in tags}
    return SweepReport(
        sweep_name=tags.get(SWEEP_TAG, parent.info.run_name), parent_run_id=parent.info.run_id,
        experiment=experiment, space=space, trials=trials,
        rows=ablation_rows(space, trials) if space.kind == "grid" else [],
        time=time_account(client, parent, trials), sweep_dir=tags.get("toco.sweep.dir", ""),
        dataset=", ".join(datasets) or "unknown", optuna=optuna,
    )


# --- writing -----------------------------------------------------------------------------------------------------
def fmt(value: float | None, std: float | None = None) -> str:
    """``62.5``, ``62.5 ± 1.3``, or ``–``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:.1f} ± {std:.1f}" if std is not None else f"{value:.1f}"


def markdown(report: SweepReport) -> str:
    """The whole report as Markdown: the table, every trial, the time account."""
    space = report.space
    lines = [f"# Sweep `{report.sweep_name}`", ""]
    if space.description:
        lines += [space.description, ""]
    lines += [f"MLflow experiment `{report.experiment}`, parent run `{report.parent_run_id}`; {len(report.trials)} "
              f"trial(s); dataset: {report.dataset}; metric `{space.metric}` ({space.mode}).", ""]
    lines += ablation_markdown(report) if space.kind == "grid" else optuna_markdown(report)
    lines += ["", "## Every trial", "", *table_markdown(*trial_table(report))]
    lines += ["", "## Time", "", *time_markdown(report.time)]
    return "\n".join(lines) + "\n"


def ablation_markdown(report: SweepReport) -> list[str]:
    space = report.space
    title = paper.TITLES.get(space.paper.table, "") if space.paper else ""
    lines = [f"## {title or 'Ablation'}", ""]
    if space.paper:
        note = ("the paper's numbers (ViT-B on PASCAL VOC 2012 val) for reference" if report.dataset == "voc" else
                f"the paper's numbers are ViT-B on PASCAL VOC 2012 val, a reference only: not comparable with "
                f"this sweep's data ({report.dataset}) and schedule")
        lines += [f"mIoU (%), mean ± sample std over seeds; {note}.", ""]
    header, rows = ablation_table(report)
    return lines + table_markdown(header, rows)


def ablation_table(report: SweepReport) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the ablation table (strings, as in the Markdown and the CSV)."""
    axis = ", ".join(report.space.axis_keys())
    header = [f"setting ({axis})", "seeds", "M", "M^m", "Seg"]
    if report.space.paper:
        header += ["paper row", "paper M", "paper M^m", "paper Seg"]
    rows = []
    for row in report.rows:
        cells = [row.label, str(len(row.seeds))] + [fmt(row.mean[c], row.std[c]) for c in COLUMN_METRICS]
        if report.space.paper:
            cells += [row.paper_row] + [fmt(row.paper_values.get(c)) for c in COLUMN_METRICS]
        rows.append(cells)
    return header, rows


def optuna_markdown(report: SweepReport) -> list[str]:
    column = OBJECTIVE_COLUMN[report.space.metric]
    done = [t for t in report.trials if t.values.get(column) is not None]
    lines = ["## Optuna search", ""]
    if done:
        pick = max if report.space.mode == "max" else min
        best = pick(done, key=lambda t: t.values[column])
        settings = ", ".join(f"`{k}` = {short(best.params.get(k, '?'))}" for k in report.space.search)
        lines += [f"Best: trial {best.optuna_number} ({best.run_name}), {column} {fmt(best.values[column])}: "
                  f"{settings}.", ""]
    lines += ["Plots: `optuna_history.png` (optimisation history), `optuna_importances.png` (parameter "
              "importances), when the study has enough finished trials."]
    return lines


def trial_table(report: SweepReport) -> tuple[list[str], list[list[str]]]:
    """Every trial: identity, the swept values, its numbers, how it ended."""
    keys = report.space.axis_keys() if report.space.kind == "optuna" else []
    header = ["trial", "run", "setting", "seed", *keys, "M", "M^m", "Seg", "iteration", "ended", "wall s",
              "train s"]
    rows = []
    for t in report.trials:
        ended = t.status.lower() + (" (stopped early)" if t.stopped_early else "") + (" (reused)" if t.reused else "")
        ident = f"optuna {t.optuna_number}" if t.optuna_number is not None else t.trial_id
        rows.append([ident, t.run_name, t.label, t.seed, *(short(t.params.get(k, "")) for k in keys),
                     *(fmt(t.values[c]) for c in COLUMN_METRICS), str(t.iteration), ended, f"{t.wall_s:.0f}",
                     f"{t.train_s:.0f}"])
    return header, rows


def short(text: str) -> str:
    """A logged param for a table: floats to 4 significant digits (``0.3503``), anything else as logged."""
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() and "." not in text else f"{value:.4g}"


def time_markdown(account: TimeAccount) -> list[str]:
    return [
        f"- sweep wall time: {account.wall_s:.0f} s, {account.trials} trial(s), {account.max_concurrent} at a time: "
        f"{account.trials_per_hour:.1f} trials/hour",
        f"- trials' own wall time (MLflow run start to end): {account.trial_wall_s:.0f} s",
        f"- inside training steps (forward, backward, update, data loading): {account.train_s:.0f} s",
        f"- outside training steps (Ray and Train start-up, evaluation, checkpoints, tracking, teardown): "
        f"{100 * account.outside_share:.0f}% of wall time × concurrency",
    ]


def table_markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return out + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def table_csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# --- plots ---------------------------------------------------------------------------------------------------------
def ablation_figure(report: SweepReport):
    """Grouped bars (M, M^m, Seg per setting) with std error bars; the paper's numbers as black ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.rows
    # only the columns some row has; a row without the column gets no bar (NaN), as Table 4 leaves it empty
    columns = [c for c in COLUMN_METRICS if any(r.mean[c] is not None for r in rows)] or ["M"]
    width = 0.8 / len(columns)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(rows) + 2), 3.8))
    for j, column in enumerate(columns):
        xs = [i + (j - (len(columns) - 1) / 2) * width for i in range(len(rows))]
        means = [r.mean[column] if r.mean[column] is not None else math.nan for r in rows]
        errs = [r.std[column] or 0.0 for r in rows]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=column)
        paper_xs = [x for x, r in zip(xs, rows) if r.paper_values.get(column) is not None]
        paper_ys = [r.paper_values[column] for r in rows if r.paper_values.get(column) is not None]
        if paper_xs:
            ax.scatter(paper_xs, paper_ys, marker="_", s=200, color="black", zorder=3,
                       label="paper (VOC)" if j == 0 else None)
    ax.set_xticks(range(len(rows)), [r.label for r in rows], rotation=20, ha="right")
    ax.set_ylabel("mIoU (%)")
    title = paper.TITLES.get(report.space.paper.table) if report.space.paper else None
    ax.set_title(f"{report.sweep_name}: {title or 'ablation'}", fontsize=10)
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return fig


def optuna_figures(report: SweepReport) -> dict[str, Any]:
    """Optuna's optimisation history and parameter importances (matplotlib), for those the study allows."""
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    from optuna.visualization import matplotlib as ovm

    if not report.optuna:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=report.optuna["optuna.study_name"], storage=report.optuna["optuna.storage"])
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        for name, plot in (("optuna_history.png", ovm.plot_optimization_history),
                           ("optuna_importances.png", ovm.plot_param_importances)):
            try:
                figures[name] = plot(study).figure
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few finished trials (importances need two with different values)
    return figures


def write_report(report: SweepReport, folder: Path) -> list[Path]:
    """Writes ``report.md``, ``table.csv`` (grid), ``trials.csv`` and the plots into ``folder``; returns the paths."""
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.md", folder / "trials.csv"]
    written[0].write_text(markdown(report))
    written[1].write_text(table_csv(*trial_table(report)))
    if report.space.kind == "grid":
        (folder / "table.csv").write_text(table_csv(*ablation_table(report)))
        written.append(folder / "table.csv")
        figures = {"ablation.png": ablation_figure(report)} if report.rows else {}
    else:
        figures = optuna_figures(report)
    for name, figure in figures.items():
        figure.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(figure)
        written.append(folder / name)
    return written


def log_report(client, report: SweepReport, folder: Path) -> None:
    """Logs the report folder as the parent run's ``report/`` artifacts."""
    client.log_artifacts(report.parent_run_id, str(folder), REPORT_DIR)
