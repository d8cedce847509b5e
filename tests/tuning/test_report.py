"""Report arithmetic: rows grouped over seeds, mean ± sample std, inapplicable columns, the paper's numbers, time."""

import math

import pytest

from toco_ray.tuning.report import (
    AblationRow,
    SweepReport,
    TimeAccount,
    TrialRecord,
    ablation_rows,
    ablation_table,
    fmt,
    markdown,
    short,
    trial_table,
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


def record(label: str, seed: int, m: float, mm: float | None, seg: float | None, train_s=10.0) -> TrialRecord:
    return TrialRecord(
        run_id=f"{label}{seed}", run_name=f"demo-{label}-s{seed}", status="FINISHED", label=label, seed=str(seed),
        trial_id=f"t{seed}", optuna_number=None, stopped_early=False, reused=False, params={},
        values={"M": m, "M^m": mm, "Seg": seg}, iteration=60, wall_s=40.0, train_s=train_s,
    )


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
