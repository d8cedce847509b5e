"""Bad values and names on `pipelines.train`'s command line: one error line, exit 2, before Ray starts."""

from __future__ import annotations

import pytest

from pipelines.train import build_job, main, parse_args
from toco_ray.config_checks import check_config

pytestmark = pytest.mark.unit


def ray_must_not_start(*args, **kwargs):
    raise AssertionError("Ray was started")


@pytest.fixture
def refuse(tiny_root, tmp_path, capsys, monkeypatch):
    """Runs train with ``args``; asserts exit 2, one error line, Ray not started, nothing written; returns the line."""
    monkeypatch.setattr("toco_ray.distributed.launcher.init_ray", ray_must_not_start)

    def run(*args: str) -> str:
        out = tmp_path / "outputs"
        rc = main(["--smoke", "--data-root", str(tiny_root), "--output-dir", str(out), "--workers", "1", *args])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert not out.exists() and list(tmp_path.parent.glob("escape*")) == []
        assert err.count("\n") == 1 and err.startswith("error: ")
        return err.strip()

    return run


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # case 14: a zero batch used to divide by zero in the workers, 4 attempts
        ("train.global_batch=0", "error: config key 'train.global_batch' must be at least 1, got 0"),
        # case 15: an aux block outside a depth-4 backbone
        ("model.aux_layer=99",
         "error: config key 'model.aux_layer': model.aux_layer=99 is outside the backbone's 4 blocks ([-4, 4))"),
        # case 16: a 7-pixel crop holds no 8-pixel patch
        ("data.crop_size=7", "error: config key 'data.crop_size' (7) is smaller than one patch of the backbone (8 px)"),
        # case 17: NaN learning rate
        ("optim.lr=.nan", "error: config key 'optim.lr' must be a finite number, got nan"),
        # case 18: a NaN or negative loss weight silently switched its term off
        ("loss.w_ptc=.nan", "error: config key 'loss.w_ptc' must be a finite number, got nan"),
        ("loss.w_ptc=-0.2", "error: config key 'loss.w_ptc' must be ≥ 0, got -0.2"),
        # case 12: overflowing and non-finite numbers
        ("optim.lr=1e309", "error: config key 'optim.lr' must be a finite number, got inf"),
        ("optim.lr=.inf", "error: config key 'optim.lr' must be a finite number, got inf"),
        # local crops that do not fit the view they are cut from
        ("ctc.local_crop_size=200",
         "error: config key 'ctc.local_crop_size' (200): a 128×128 view (data.crop_size) cannot hold 4 local crops "
         "of that size (ctc.n_local_crops); use a smaller crop or a larger view"),
        # -1 sizes the loaders from the CPUs; below that is no count
        ("data.num_workers=-2",
         "error: config key 'data.num_workers' must be ≥ 0, or -1 to size the loaders from the CPUs, got -2"),
        # a generator style the synthetic dataset cannot draw
        ("data.synthetic_object_side=[0.8,0.4]", "error: config key 'data.synthetic_object_side' must be [low, high] "
         "with 0.05 ≤ low ≤ high ≤ 1.5, got [0.8, 0.4]"),
        ("data.synthetic_clutter=5", "error: config key 'data.synthetic_clutter' must be in [0, 4], got 5.0"),
        ("data.train_split=../../x", "error: config key 'data.train_split': '../../x' is not a valid name: use "
         "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters, no '..'"),
    ],
)
def test_out_of_range_values_are_refused_before_ray_starts(refuse, override, message):
    assert refuse("--set", override) == message


def test_case19_keep_checkpoints_zero_is_refused(refuse):
    assert refuse("--keep-checkpoints", "0") == "error: --keep-checkpoints must be at least 1, got 0"


@pytest.mark.parametrize("name", ["../../escape", "a/b", "o'brien", "with space", ".hidden", "x" * 129])
def test_case20_21_run_names_outside_the_safe_alphabet_are_refused(refuse, name):
    # case 20: ../../escape wrote config.yaml two levels above --output-dir; case 21: o'brien broke the MLflow filter
    assert refuse("--run-name", name).startswith(f"error: run name {name!r} is not a valid name: use letters")


def test_case11_scientific_notation_is_a_float(tiny_root, tmp_path):
    args = parse_args(["--smoke", "--data-root", str(tiny_root), "--output-dir", str(tmp_path),
                       "--set", "optim.lr=6e-5", "--set", "loss.reg_weight=1E-7", "train.global_batch=8"])
    cfg = check_config(build_job(args).cfg)
    assert (cfg.optim.lr, cfg.loss.reg_weight, cfg.train.global_batch) == (6e-5, 1e-7, 8)


def test_the_mlflow_run_name_filter_is_quoted():
    from toco_ray.tracking import TrackingError, quote_filter

    assert quote_filter("o'brien") == '"o\'brien"' and quote_filter("run-1") == "'run-1'"
    with pytest.raises(TrackingError, match="holds both quote characters"):
        quote_filter("""a'b"c""")


@pytest.mark.parametrize("port", ["70000", "-1"])
def test_case51_a_port_outside_0_65535_is_refused(tmp_path, capsys, port):
    # 70000 and -1 raised OverflowError in bind(); 0 picks a free port (case 52, tests/cluster)
    from pipelines.tracking_server import main as server_main

    assert server_main(["--smoke", "--port", port, "--output-dir", str(tmp_path / "db")]) == 2
    assert capsys.readouterr().err == f"error: --port must be a TCP port in 0..65535 (0: any free port), got {port}\n"
    assert not (tmp_path / "db").exists()
