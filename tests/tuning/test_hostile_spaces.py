"""Hostile space files and sweep names: one error line naming the file or key, exit 2, nothing started or written."""

from __future__ import annotations

import pytest
from space_files import SPACES, write

from pipelines.sweep import main as sweep_main
from toco_ray.tuning import SpaceError, load_space

pytestmark = pytest.mark.unit


def ray_must_not_start(*args, **kwargs):
    raise AssertionError("Ray was started")


@pytest.fixture
def refuse(tmp_path, capsys, monkeypatch):
    """Runs `pipelines.sweep` with ``args``; asserts exit 2, one error line, Ray not started, nothing written."""
    monkeypatch.setattr("toco_ray.tuning.sweep.start_ray", ray_must_not_start)

    def run(*args: str) -> str:
        out = tmp_path / "outputs"
        rc = sweep_main([*args, "--smoke", "--output-dir", str(out)])
        err = capsys.readouterr().err
        assert rc == 2, err
        assert not out.exists() and list(tmp_path.parent.glob("escaped*")) == []
        assert err.count("\n") == 1 and err.startswith("error: ")
        return err.strip()

    return run


def test_case1_a_key_given_twice_is_refused(tmp_path, refuse):
    path = write(tmp_path, """
        base: {preset: synthetic}
        kind: grid
        grid: {loss.w_ptc: [0.1, 0.2]}
        grid: {loss.w_ctc: [0.1]}
    """)
    assert refuse(str(path)) == (f"error: {path}: not valid YAML: found duplicate key 'grid' at line 5, column 1")


def test_case3_an_infinite_bound_is_refused(tmp_path, refuse):
    path = write(tmp_path, """
        base: {preset: synthetic}
        kind: optuna
        metric: cam_miou
        num_samples: 2
        search:
          loss.w_ptc: {type: float, low: 0.0, high: .inf}
    """)
    assert refuse(str(path)) == f"error: {path}: key 'search.loss.w_ptc.high' must be a finite number, got inf"


def test_case6_a_space_file_that_is_not_utf8(tmp_path, refuse):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"base: {preset: synthetic}\nkind: grid\n# \xff\xfe\n")
    assert refuse(str(path)) == (f"error: search space {path} is not UTF-8 text (byte 39: invalid start byte)")


def test_case7_a_space_path_that_is_a_folder(refuse):
    assert refuse(str(SPACES)) == f"error: search space {SPACES} is a folder; expected a YAML file"


def test_case8_scientific_notation_in_bounds_and_base_set(tmp_path):
    path = write(tmp_path, """
        base: {preset: synthetic, set: {optim.lr: 5e-4}}
        kind: optuna
        metric: cam_miou
        num_samples: 2
        search:
          loss.w_ptc: {type: loguniform, low: 1e-5, high: 1.0}
    """)
    space = load_space(path)
    assert space.search["loss.w_ptc"].low == 1e-5 and space.config().optim.lr == 5e-4


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "o'brien"])
def test_case46_sweep_names_outside_the_safe_alphabet_are_refused(refuse, name):
    message = refuse(str(SPACES / "quick_demo.yaml"), "--name", name)
    assert message.startswith(f"error: sweep name (--name, default the space file's name) {name!r} is not a valid")


def test_bad_values_in_a_space_are_refused_with_their_key(tmp_path):
    path = write(tmp_path, """
        base: {preset: synthetic}
        kind: grid
        grid: {train.global_batch: [0, 8]}
    """)
    with pytest.raises(SpaceError, match=r"grid.train.global_batch: config key 'train.global_batch' must be at least"):
        load_space(path)


def test_a_row_name_yaml_reads_as_a_boolean_is_refused(tmp_path):
    path = write(tmp_path, """
        base: {preset: synthetic}
        kind: grid
        variants:
          - {name: off, set: {loss.w_ptc: 0.0}}
          - {name: 'on', set: {loss.w_ptc: 0.2}}
    """)
    with pytest.raises(SpaceError, match=r"key 'variants\[0\].name': YAML reads off, on, yes and no as true/false"):
        load_space(path)
    path.write_text(path.read_text().replace("name: off", "name: 'off'"))
    assert [v.name for v in load_space(path).variants] == ["off", "on"]
