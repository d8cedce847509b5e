"""Report arithmetic: rows grouped over seeds, mean ± sample std, inapplicable columns, the paper's numbers, time."""

import math

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from toco_ray.metric_names import oversmoothing_curves
from toco_ray.tuning.report import (
    AblationRow,
    SweepReport,
    TimeAccount,
    TrialRecord,
    ablation_figure,
    ablation_rows,
    ablation_table,
    fmt,
    markdown,
    math_label,
    short,
    sweep_oversmoothing_figure,
    trial_table,
    variant_oversmoothing_figure,
    write_report,
)
from toco_ray.tuning.space import parse_space

pytestmark = pytest.mark.unit

SPACE = {
    "base": {"preset": "synthetic"},
    "kind": "grid",
    "seeds": [0, 1],
    "variants": [
        {"name": "+L_cls^m", "set": {"loss.w_ptc": 0.0}},
        {"name": "+PTC", "set": {}},
    ],
    "paper": {"table": "4"},
}


def record(label: str, seed: int, m: float, mm: float | None, seg: float | None, train_s=10.0,
           oversmoothing=None) -> TrialRecord:
    return TrialRecord(
        run_id=f"{label}{seed}", run_name=f"demo-{label}-s{seed}", status="FINISHED", label=label, seed=str(seed),
        trial_id=f"t{seed}", optuna_number=None, stopped_early=False, reused=False, params={},
        values={"M": m, "M^m": mm, "Seg": seg}, iteration=60, wall_s=40.0, train_s=train_s,
        oversmoothing=oversmoothing or {},
    )


def report_of(trials: list[TrialRecord]) -> SweepReport:
    space = parse_space(SPACE, name="demo")
    return SweepReport("demo", "p", "exp", space, trials, ablation_rows(space, trials),
                       TimeAccount(100, len(trials), 1, 80, 40), "", "synthetic")


def test_rows_take_mean_and_sample_std_over_seeds_beside_the_paper():
    space = parse_space(SPACE, name="demo")
    trials = [record("+L_cls^m", 0, 10.0, 20.0, None), record("+L_cls^m", 1, 14.0, 22.0, None),
              record("+PTC", 0, 30.0, 40.0, None), record("+PTC", 1, 33.0, None, None)]
    rows = ablation_rows(space, trials)
    assert [r.label for r in rows] == ["+L_cls^m", "+PTC"]
    # mean(10, 14) = 12; sample std = |14 − 10| / √2 = 2.828…
    assert rows[0].mean["M"] == 12.0 and rows[0].std["M"] == pytest.approx(2 * math.sqrt(2))
    assert rows[0].mean["Seg"] is None and rows[0].std["Seg"] is None  # no seg loss: "–", as in Table 4
    assert rows[1].mean["M^m"] == 40.0 and rows[1].std["M^m"] is None  # one seed with a value: no std
    assert rows[1].paper_row == "+PTC" and rows[1].paper_values == {"M": 62.5, "M^m": 57.8, "Seg": None}
    header, cells = ablation_table(SweepReport("demo", "p", "e", space, trials, rows,
                                               TimeAccount(100, 4, 1, 80, 40), "", "synthetic"))
    assert header[:5] == ["setting (loss.w_ptc)", "seeds", "M", "M^m", "Seg"]
    assert cells[0] == ["+L_cls^m", "2", "12.0 ± 2.8", "21.0 ± 1.4", "–", "+L_cls^m", "27.9", "53.8", "–"]
    assert cells[1][2:5] == ["31.5 ± 2.1", "40.0", "–"]  # mean(30, 33) = 31.5, std = 3/√2 = 2.12


def test_time_account_and_the_markdown_lists_every_trial():
    space = parse_space(SPACE, name="demo")
    trials = [record("+PTC", s, 30.0 + s, 40.0, None, train_s=15.0) for s in (0, 1)]
    # 2 trials in 240 s → 30 trials/hour; 30 s in training steps of 240 s × 1 concurrent → 87.5 % outside
    account = TimeAccount(wall_s=240.0, trials=2, max_concurrent=1, trial_wall_s=200.0, train_s=30.0)
    assert account.trials_per_hour == 30.0 and account.outside_share == pytest.approx(0.875)
    report = SweepReport("demo", "p", "exp", space, trials, ablation_rows(space, trials), account, "", "synthetic")
    text = markdown(report)
    for t in trials:
        assert f"| t{t.seed} | {t.run_name} | +PTC | {t.seed} | {t.values['M']:.1f} | 40.0 | – |" in text
    assert "not comparable" in text and "30.0 trials/hour" in text and "88% of wall time" in text
    assert len(trial_table(report)[1]) == 2


def test_formatting():
    assert (fmt(None), fmt(62.54), fmt(62.54, 1.26)) == ("–", "62.5", "62.5 ± 1.3")
    assert (short("0.35031627823034683"), short("96"), short("0.2"), short("deit")) == ("0.3503", "96", "0.2", "deit")
    assert AblationRow("x", [], {}, {}).paper_values == {}


def test_a_row_beyond_the_seed_noise_and_a_row_within_it():
    # +L_cls^m: M 10, 14 → mean 12, std 2.83; +PTC: 30, 33 → mean 31.5, std 2.12; Δ 19.5 > 2 × 2.83 = 5.66
    beyond = report_of([record("+L_cls^m", 0, 10.0, 20.0, None), record("+L_cls^m", 1, 14.0, 22.0, None),
                        record("+PTC", 0, 30.0, 40.0, None), record("+PTC", 1, 33.0, 41.0, None)])
    ptc = beyond.rows[1]
    assert ptc.delta == pytest.approx(19.5) and ptc.noise == pytest.approx(4 * math.sqrt(2))
    assert beyond.rows[0].delta is None
    assert "- `+PTC`: Δ M +19.5, beyond the seed noise (5.7)" in markdown(beyond)
    # +PTC: 12, 18 → mean 15, std 4.24; Δ 3 < 2 × 4.24 = 8.49: the report says the seeds cannot tell them apart
    within = report_of([record("+L_cls^m", 0, 10.0, 20.0, None), record("+L_cls^m", 1, 14.0, 22.0, None),
                        record("+PTC", 0, 12.0, 40.0, None), record("+PTC", 1, 18.0, 41.0, None)])
    assert within.rows[1].noise == pytest.approx(6 * math.sqrt(2))
    assert "Δ M +3.0, **within the seed noise** (8.5): these seeds do not tell the two rows apart" in markdown(within)
    single = report_of([record("+L_cls^m", 0, 10.0, 20.0, None), record("+PTC", 0, 30.0, 40.0, None)])
    assert single.rows[1].noise is None and "no seed noise can be told from one seed" in markdown(single)


def test_oversmoothing_curves_come_from_the_run_metrics_by_pair_kind_and_block():
    metrics = {"oversmoothing/block_02": 0.6, "oversmoothing/block_01": 0.4, "oversmoothing_fg_bg/block_03": -0.1,
               "oversmoothing_fg_bg/block_01": 0.2, "eval/cam_miou": 0.3, "oversmoothing/block_xx": 9.0}
    curves = oversmoothing_curves(metrics)
    assert curves["all"] == [0.4, 0.6]
    assert curves["fg_bg"][0] == 0.2 and math.isnan(curves["fg_bg"][1]) and curves["fg_bg"][2] == -0.1
    assert "fg_fg" not in curves


def test_the_sweep_figure_2_has_one_curve_per_variant_with_the_mean_over_seeds():
    curves = {
        "all": {"+L_cls^m": [[0.2, 0.4, 0.6], [0.4, 0.6, 0.8]], "+PTC": [[0.3, 0.5, 0.7], [0.3, 0.7, 0.9]]},
        "fg_bg": {"+L_cls^m": [[0.2, 0.3, 0.5], [0.2, 0.5, math.nan]], "+PTC": [[0.2, 0.1, -0.1]]},
    }
    fig = variant_oversmoothing_figure(curves)
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert [line.get_label() for line in fig.axes[0].lines] == ["+L_cls^m (n=2)", "+PTC (n=2)"]
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [0.3, 0.5, 0.7])  # mean of the two seeds
    # a NaN block is left out of that block's mean; one seed gives the curve alone
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.2, 0.4, 0.5])
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), [0.2, 0.1, -0.1])
    assert fig.axes[1].get_title() == "foreground–background pairs"
    assert fig.axes[0].get_ylim()[0] < -0.1
    assert fig.axes[0].lines[1].get_color() == fig.axes[1].lines[1].get_color()  # +PTC in both panels


def test_the_report_draws_figure_2_from_its_trials_and_writes_it(tmp_path):
    smooth = {"all": [0.5, 0.9], "fg_bg": [0.4, 0.8]}
    contrast = {"all": [0.5, 0.6], "fg_bg": [0.3, 0.1]}
    report = report_of([record("+L_cls^m", s, 10.0 + s, 20.0, None, oversmoothing=smooth) for s in (0, 1)]
                       + [record("+PTC", s, 30.0 + s, 40.0, None, oversmoothing=contrast) for s in (0, 1)])
    fig = sweep_oversmoothing_figure(report)
    assert [[line.get_label() for line in ax.lines] for ax in fig.axes] == [["+L_cls^m (n=2)", "+PTC (n=2)"]] * 2
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), [0.3, 0.1])
    assert (tmp_path / "oversmoothing.png") in write_report(report, tmp_path)
    assert (tmp_path / "oversmoothing.png").stat().st_size > 0 and "oversmoothing.png" in markdown(report)
    assert sweep_oversmoothing_figure(report_of([record("+PTC", 0, 30.0, 40.0, None)])) is None


def test_the_bar_chart_has_a_dot_per_seed_and_labelled_paper_values_and_the_trials_link_to_mlflow():
    report = report_of([record("+L_cls^m", 0, 10.0, 20.0, None), record("+L_cls^m", 1, 14.0, 22.0, None),
                        record("+PTC", 0, 30.0, 40.0, None)])
    ax = ablation_figure(report).axes[0]
    points = sorted(round(float(y), 1) for c in ax.collections if isinstance(c, PathCollection)
                    for _, y in c.get_offsets())
    # a dot per seed in M (10, 14, 30) and M^m (20, 22, 40), and the paper's ticks of the two rows
    assert points == sorted([10.0, 14.0, 30.0, 20.0, 22.0, 40.0, 27.9, 62.5, 53.8, 57.8])
    assert {text.get_text() for text in ax.texts} == {"27.9", "53.8", "62.5", "57.8"}  # the paper's, labelled
    assert [t.get_text() for t in ax.get_xticklabels()] == ["+$L_{cls}^{m}$", "+PTC"]
    assert math_label("L_cls") == "$L_{cls}$" and math_label("+L_seg") == "+$L_{seg}$"
    report.tracking_uri, report.experiment_id = "http://127.0.0.1:5000", "3"
    text = markdown(report)
    assert "| [run](http://127.0.0.1:5000/#/experiments/3/runs/+L_cls^m0?workflowType=machine_learning) |" in text
