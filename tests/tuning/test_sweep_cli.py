"""The sweep command refuses bad search spaces before anything starts: no Ray, no MLflow store, no sweep folder."""

import pytest
import ray

from pipelines import sweep as sweep_cli

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("kind: grid\ngrid: {loss.w_ptcc: [0.1, 0.2]}\n", "unknown config key 'loss.w_ptcc'"),
        ("kind: grid\ngrid: {cam.low_thre: [0.3, 0.75]}\n", "constraint 'cam.low_thre < cam.high_thre'"),
        ("kind: grid\ngrid: {ctc.ema_momentum: []}\n", "key 'grid.ctc.ema_momentum' is an empty grid"),
        ("kind: grid\ngrid: {ctc.local_crop_size: [64, 80.5]}\n", "'ctc.local_crop_size' expects int, got 80.5"),
    ],
)
def test_bad_space_fails_naming_the_key_before_anything_starts(tmp_path, capsys, body, key):
    space = tmp_path / "bad.yaml"
    space.write_text("base: {preset: synthetic}\n" + body)
    was_up = ray.is_initialized()
    assert sweep_cli.main([str(space), "--output-dir", str(tmp_path / "out")]) == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no sweep folder, no MLflow store
    assert ray.is_initialized() == was_up


def test_num_samples_is_refused_for_a_grid(tmp_path, capsys, tiny_root):
    space = tmp_path / "grid.yaml"
    space.write_text(f"base: {{preset: synthetic, set: {{data.root: {tiny_root}}}}}\nkind: grid\n"
                     "grid: {loss.w_ptc: [0.1]}\n")
    assert sweep_cli.main([str(space), "--num-samples", "3", "--output-dir", str(tmp_path / "out")]) == 2
    assert "--num-samples applies to Optuna sweeps" in capsys.readouterr().err


def test_dry_run_lists_the_trials_and_starts_nothing(tmp_path, capsys):
    space = tmp_path / "two.yaml"
    space.write_text("base: {preset: synthetic}\nkind: grid\nseeds: [0, 1]\n"
                     "variants:\n  - {name: 'off', set: {loss.w_ptc: 0.0}}\n  - {name: 'on', set: {}}\n")
    was_up = ray.is_initialized()
    assert sweep_cli.main([str(space), "--dry-run", "--output-dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "two: 4 trial(s), grid, metric seg_miou (max)"
    assert [line.split()[:3] for line in lines[1:]] == [["off", "s0", "·"], ["off", "s1", "·"], ["on", "s0", "·"],
                                                         ["on", "s1", "·"]]
    assert lines[1].endswith("loss.w_ptc=0, train.seed=0") and lines[3].endswith("base only, train.seed=0")
    assert not (tmp_path / "out").exists() and ray.is_initialized() == was_up
    # a bad key is the same one-line refusal as for a real sweep
    assert sweep_cli.main([str(space), "--dry-run", "--set", "loss.w_ptcc=1"]) == 2
    assert "unknown config key 'loss.w_ptcc'" in capsys.readouterr().err
