"""Sweep reports: the paper's Table 4/5 layout (M, M^m, Seg) from a sweep's MLflow runs, with plots.

Everything comes from MLflow: the parent run (found by run id, sweep name or experiment name) carries the search
space as an artifact and the Optuna study's location as tags; each child run is one trial, with its row label and
seed as tags and its metric history. A grid sweep gives one row per ablation setting, mean ± sample std over seeds,
the paper's numbers beside it (``toco_ray/tuning/paper.py``) and a bar chart; an Optuna sweep lists every trial by
objective, with Optuna's optimisation-history and parameter-importance plots. Every report lists every trial, and
accounts for time: the sweep's wall time, trials per hour and the share of it spent outside training steps.

A grid report also compares each row with the first (the baseline): the difference of the means, and whether it
exceeds the seed noise, twice the larger of the two rows' sample std (with one seed per row, no noise can be told
and the report says so). And it draws the paper's Figure 2 across rows: each row's final per-block patch-token
cosine similarity, mean ± std over seeds, for all token pairs and for pairs of different ground-truth classes.

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
import re
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from matplotlib.figure import Figure
from mlflow import MlflowClient

from toco_ray.metric_names import PAIR_TITLES, PAPER_COLUMN, eval_miou, oversmoothing_curves, report_key, trained_kinds
from toco_ray.tracking import run_url
from toco_ray.tuning import paper, runs
from toco_ray.tuning.space import SearchSpace

# the paper's columns: M (final CAM), M^m (auxiliary CAM), Seg (segmentation branch), each a prediction kind's mIoU
COLUMN_KINDS = {column: kind for kind, column in PAPER_COLUMN.items()}
COLUMN_METRICS = {column: eval_miou(kind) for column, kind in COLUMN_KINDS.items()}
OBJECTIVE_COLUMN = {report_key(kind): column for column, kind in COLUMN_KINDS.items()}
REPORT_DIR = "report"
FIGURE_DPI = 150  # legible on a slide
DASH = "–"


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
    start_ms: int = 0  # the run's start (MLflow's milliseconds since the epoch)
    oversmoothing: dict[str, list[float]] = field(default_factory=dict)  # {pair kind: per-block cosine}, last eval


@dataclass
class AblationRow:
    """One row of an ablation table: a setting, its numbers over seeds, and the paper's."""

    label: str
    seeds: list[str]
    mean: dict[str, float | None]
    std: dict[str, float | None]
    values: dict[str, list[float]] = field(default_factory=dict)  # {column: the value of each seed that has one}
    paper_row: str = ""
    paper_values: dict[str, float | None] = field(default_factory=dict)
    delta: float | None = None  # mean − the first row's mean, in the report's metric column
    noise: float | None = None  # 2 × the larger sample std of this row and the first; None without two seeds each


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
    optuna: dict[str, str] = field(default_factory=dict)  # {"storage", "study_name"} of an Optuna sweep
    tracking_uri: str = ""  # where the runs are: each trial's row links to its run in the MLflow UI
    experiment_id: str = ""


# --- reading the trials ---------------------------------------------------------------------------------------
def trial_record(client: MlflowClient, run) -> TrialRecord:
    """A child run's numbers: the last evaluation of each column, the time it spent training."""
    params, values, iteration = run.data.params, {}, 0
    trained = trained_kinds(params)
    for column, metric in COLUMN_METRICS.items():
        last = runs.last_value(client, run.info.run_id, metric)
        values[column] = 100 * last[1] if last is not None and trained[COLUMN_KINDS[column]] else None
        iteration = max(iteration, last[0] if last else 0)
    who = runs.identity(run)
    end = run.info.end_time or run.info.start_time
    return TrialRecord(
        run_id=run.info.run_id, run_name=run.info.run_name, status=run.info.status, label=who.label, seed=who.seed,
        trial_id=who.trial_id, optuna_number=who.optuna_number, stopped_early=who.stopped_early, reused=who.reused,
        params=dict(params), values=values, iteration=iteration, wall_s=(end - run.info.start_time) / 1000,
        train_s=runs.train_seconds(client, run.info.run_id, int(params.get("train.global_batch", 1))),
        start_ms=run.info.start_time, oversmoothing=oversmoothing_curves(run.data.metrics),
    )


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
            row.values[column] = values
        if space.paper is not None:
            row.paper_row = space.paper.row_for(label)
            row.paper_values = paper.paper_row(space.paper.table, row.paper_row)
        rows.append(row)
    compare_to_first(rows, compared_column(rows, space.metric))
    return rows


def compared_column(rows: Sequence[AblationRow], metric: str) -> str:
    """The column rows are compared in: the sweep's metric, or ``M`` where the first row has no value in it (a
    Table 4 row without L_seg has no Seg)."""
    column = OBJECTIVE_COLUMN.get(metric, "M")
    return column if rows and rows[0].mean[column] is not None else "M"


def compare_to_first(rows: Sequence[AblationRow], column: str) -> None:
    """Sets each later row's ``delta`` to the first row (the baseline) in ``column`` and the seed ``noise`` it must
    exceed: twice the larger of the two rows' sample std."""
    if not rows or rows[0].mean[column] is None:
        return
    first = rows[0]
    for row in rows[1:]:
        if row.mean[column] is None:
            continue
        row.delta = row.mean[column] - first.mean[column]
        stds = (first.std[column], row.std[column])
        row.noise = 2 * max(stds) if None not in stds else None


def time_account(client: MlflowClient, parent, trials: Sequence[TrialRecord]) -> TimeAccount:
    """The sweep's wall time (all sessions) against the time its trials spent in training steps."""
    wall = runs.sweep_wall_s(client, parent, [t.start_ms + 1000 * t.wall_s for t in trials if t.wall_s])
    concurrent = int(parent.data.params.get("sweep.max_concurrent", 1))
    return TimeAccount(wall, len(trials), concurrent, sum(t.wall_s for t in trials), sum(t.train_s for t in trials))


def build_report(client: MlflowClient, target: str) -> SweepReport:
    """Reads the sweep named by ``target`` (parent run id, sweep name or experiment) from MLflow.

    Raises:
        ReportError: no such sweep, or its parent run has no search space.
    """
    parent = runs.find_parent(client, target)
    space = runs.load_space_of(client, parent)
    trials = [trial_record(client, run) for run in runs.children(client, parent)]
    if space.kind == "optuna":
        trials.sort(key=lambda t: (t.optuna_number is None, t.optuna_number or 0))
    tags = parent.data.tags
    experiment = client.get_experiment(parent.info.experiment_id).name
    datasets = sorted({t.params.get("data.dataset", "") for t in trials} - {""})
    return SweepReport(
        sweep_name=tags.get(runs.SWEEP_TAG, parent.info.run_name), parent_run_id=parent.info.run_id,
        experiment=experiment, space=space, trials=trials,
        rows=ablation_rows(space, trials) if space.kind == "grid" else [],
        time=time_account(client, parent, trials), sweep_dir=tags.get(runs.SWEEP_DIR_TAG, ""),
        dataset=", ".join(datasets) or "unknown", optuna=runs.optuna_study_of(parent),
        tracking_uri=client.tracking_uri, experiment_id=parent.info.experiment_id,
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
    lines += ["", "## Every trial", "", *table_markdown(*trial_table(report, markdown_links=True))]
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
    lines += table_markdown(header, rows) + comparison_markdown(report)
    if any(t.oversmoothing for t in report.trials):
        lines += ["", "Figure 2 across the rows (`oversmoothing.png`): each row's per-block cosine similarity of patch "
                  "tokens at its last evaluation, mean ± std over seeds, for all pairs and for pairs of different "
                  "classes."]
    return lines


def comparison_markdown(report: SweepReport) -> list[str]:
    """One line per later row: its difference to the first row, and whether the seeds tell the two apart."""
    column = compared_column(report.rows, report.space.metric)
    later = [row for row in report.rows[1:] if row.delta is not None]
    if not later:
        return []
    first = report.rows[0].label
    lines = ["", f"Against the first row (`{first}`), in {column}; the seed noise is twice the larger sample std "
             "of the two rows:", ""]
    for row in later:
        if row.noise is None:
            verdict = "no seed noise can be told from one seed per row: run more seeds before reading it"
        elif abs(row.delta) > row.noise:
            verdict = f"beyond the seed noise ({row.noise:.1f})"
        else:
            verdict = f"**within the seed noise** ({row.noise:.1f}): these seeds do not tell the two rows apart"
        lines.append(f"- `{row.label}`: Δ {column} {row.delta:+.1f}, {verdict}")
    return lines


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


def trial_table(report: SweepReport, markdown_links: bool = False) -> tuple[list[str], list[list[str]]]:
    """Every trial: identity, the swept values, its numbers, how it ended, and its run in the MLflow UI (a
    Markdown link, or the address)."""
    keys = report.space.axis_keys() if report.space.kind == "optuna" else []
    header = ["trial", "run", "setting", "seed", *keys, "M", "M^m", "Seg", "iteration", "ended", "wall s",
              "train s", "MLflow"]
    rows = []
    for t in report.trials:
        ended = t.status.lower() + (" (stopped early)" if t.stopped_early else "") + (" (reused)" if t.reused else "")
        ident = f"optuna {t.optuna_number}" if t.optuna_number is not None else t.trial_id
        url = run_url(report.tracking_uri, report.experiment_id, t.run_id) if report.tracking_uri else ""
        rows.append([ident, t.run_name, t.label, t.seed, *(short(t.params.get(k, "")) for k in keys),
                     *(fmt(t.values[c]) for c in COLUMN_METRICS), str(t.iteration), ended, f"{t.wall_s:.0f}",
                     f"{t.train_s:.0f}", f"[run]({url})" if url and markdown_links else url])
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
def ablation_figure(report: SweepReport) -> Figure:
    """Grouped bars (M, M^m, Seg per setting) with std error bars and a dot per seed; the paper's numbers as
    labelled black ticks."""
    rows = report.rows
    # only the columns some row has; a row without the column gets no bar (NaN), as Table 4 leaves it empty
    columns = [c for c in COLUMN_METRICS if any(r.mean[c] is not None for r in rows)] or ["M"]
    width = 0.8 / len(columns)
    fig = Figure(figsize=(max(6.0, 1.6 * len(rows) + 2), 4.2))  # no pyplot: no global backend, nothing to close
    ax = fig.subplots()
    for j, column in enumerate(columns):
        xs = [i + (j - (len(columns) - 1) / 2) * width for i in range(len(rows))]
        means = [r.mean[column] if r.mean[column] is not None else math.nan for r in rows]
        errs = [r.std[column] or 0.0 for r in rows]
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=column, alpha=0.85)
        seeds = [(x, v) for x, r in zip(xs, rows) for v in r.values.get(column, [])]
        if seeds:
            ax.scatter(*zip(*seeds), s=12, color="black", alpha=0.6, zorder=3, linewidths=0,
                       label="one seed" if j == 0 else None)
        _paper_ticks(ax, [(x, r.paper_values[column]) for x, r in zip(xs, rows)
                          if r.paper_values.get(column) is not None], first=j == 0)
    ax.set_xticks(range(len(rows)), [math_label(r.label) for r in rows], rotation=20, ha="right")
    ax.set_ylabel("mIoU (%)")
    title = paper.TITLES.get(report.space.paper.table) if report.space.paper else None
    ax.set_title(f"{report.sweep_name}: {title or 'ablation'}", fontsize=10)
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return fig


def sweep_oversmoothing_figure(report: SweepReport) -> Figure | None:
    """Figure 2 across the rows: one curve per row and panel per pair kind, or None when no trial logged one."""
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for row in report.rows:
        for trial in (t for t in report.trials if t.label == row.label):
            for kind, curve in trial.oversmoothing.items():
                curves.setdefault(kind, {}).setdefault(row.label, []).append(curve)
    return variant_oversmoothing_figure(curves) if curves else None


def variant_oversmoothing_figure(curves: dict[str, dict[str, list[list[float]]]]) -> Figure:
    """Per block, the mean ± std over seeds of the final token similarity: one curve per row (variant), one panel
    per pair kind on a shared y axis.

    Args:
        curves: ``{kind: {row: [per-block similarities of one seed, ...]}}``, kinds as in ``PAIR_TITLES``; NaN
            blocks (no such pair in the probes) are left out of the mean.
    """
    kinds = [kind for kind in PAIR_TITLES if kind in curves] + [kind for kind in curves if kind not in PAIR_TITLES]
    fig = Figure(figsize=(4.5 * max(len(kinds), 1), 3.6), dpi=150, layout="constrained")
    axes = fig.subplots(1, max(len(kinds), 1), squeeze=False, sharey=True)[0]
    rows = list(dict.fromkeys(row for by_row in curves.values() for row in by_row))
    colors = {row: f"C{i % 10}" for i, row in enumerate(rows)}
    for ax, kind in zip(axes, kinds):
        for row, seeds in curves[kind].items():
            _band(ax, seeds, colors[row], row)
        ax.set_xlabel("block")
        ax.grid(alpha=0.3)
        ax.set_title(PAIR_TITLES.get(kind, kind), fontsize=9)
    axes[0].set_ylabel("mean pairwise cosine similarity")
    finite = [v for by_row in curves.values() for seeds in by_row.values() for s in seeds for v in s
              if math.isfinite(v)]
    axes[0].set_ylim(min(0.0, min(finite, default=0.0) - 0.05), 1.0)
    if rows:
        axes[0].legend(fontsize=8)
    fig.suptitle("patch-token over-smoothing at the end of training, mean ± std over seeds (Figure 2)", fontsize=10)
    return fig


def _band(ax, seeds: list[list[float]], color: str, label: str) -> None:
    """One row's curve: the mean over seeds per block, a band of ± one sample std where two seeds have a value."""
    depth = max(len(s) for s in seeds)
    table = np.array([list(s) + [math.nan] * (depth - len(s)) for s in seeds], dtype=float)
    blocks = np.arange(1, depth + 1)
    mean, std = [], []
    for column in table.T:
        values = [v for v in column if math.isfinite(v)]
        mean.append(statistics.fmean(values) if values else math.nan)
        std.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    mean, std = np.array(mean), np.array(std)
    ax.plot(blocks, mean, marker="o", color=color, label=f"{label} (n={len(seeds)})")
    ax.fill_between(blocks, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    ax.set_xticks(blocks)


def _paper_ticks(ax, points: list[tuple[float, float]], first: bool) -> None:
    """The paper's values as black ticks, each with its number above it."""
    if not points:
        return
    ax.scatter(*zip(*points), marker="_", s=200, color="black", zorder=4, label="paper (VOC)" if first else None)
    for x, y in points:
        ax.annotate(f"{y:.1f}", (x, y), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=6)


def math_label(label: str) -> str:
    """A row label with its loss names typeset: ``+L_cls^m`` → ``+$L_{cls}^{m}$``."""
    def typeset(match: re.Match) -> str:
        return f"$L_{{{match[1]}}}^{{{match[2]}}}$" if match[2] else f"$L_{{{match[1]}}}$"

    return re.sub(r"L_([A-Za-z]+)(?:\^([A-Za-z]+))?", typeset, label)


def write_optuna_figures(report: SweepReport, folder: Path) -> list[Path]:
    """Optuna's optimisation history and parameter importances, for those the study allows; returns the paths."""
    if not report.optuna:
        return []
    # Optuna draws through pyplot: imported only here, on a backend that needs no display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=report.optuna["study_name"], storage=report.optuna["storage"])
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        for name, plot in (("optuna_history.png", ovm.plot_optimization_history),
                           ("optuna_importances.png", ovm.plot_param_importances)):
            try:
                figure = plot(study).figure
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few finished trials (importances need two with different values)
            figure.savefig(folder / name, dpi=FIGURE_DPI, bbox_inches="tight")
            plt.close(figure)
            written.append(folder / name)
    return written


def write_report(report: SweepReport, folder: Path) -> list[Path]:
    """Writes ``report.md``, ``table.csv`` (grid), ``trials.csv`` and the plots into ``folder``; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.md", folder / "trials.csv"]
    written[0].write_text(markdown(report))
    written[1].write_text(table_csv(*trial_table(report)))
    if report.space.kind != "grid":
        return written + write_optuna_figures(report, folder)
    (folder / "table.csv").write_text(table_csv(*ablation_table(report)))
    written.append(folder / "table.csv")
    if report.rows:
        ablation_figure(report).savefig(folder / "ablation.png", dpi=FIGURE_DPI, bbox_inches="tight")
        written.append(folder / "ablation.png")
    figure = sweep_oversmoothing_figure(report)
    if figure is not None:
        figure.savefig(folder / "oversmoothing.png", dpi=FIGURE_DPI, bbox_inches="tight")
        written.append(folder / "oversmoothing.png")
    return written


def log_report(client: MlflowClient, report: SweepReport, folder: Path) -> None:
    """Logs the report folder as the parent run's ``report/`` artifacts."""
    client.log_artifacts(report.parent_run_id, str(folder), REPORT_DIR)
