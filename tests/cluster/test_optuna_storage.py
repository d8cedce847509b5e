"""A sweep's Optuna study can live in a database outside the sweep folder: a cluster keeps it on the head node
(cluster.yaml sets ``TOCO_OPTUNA_STORAGE`` there) while the folder is on shared storage. Nothing here starts Ray."""

import optuna
import pytest
import yaml

from pipelines import sweep as sweep_cli
from toco_ray.data.synthetic import generate_dataset
from toco_ray.tuning.state import OptunaStudy
from toco_ray.tuning.sweep import SweepError, SweepRequest, initial_state, prepare_sweep, write_state

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synthetic"), 16, 4, seed=0)


@pytest.fixture
def space(tmp_path, data_root, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "hpo.yaml"
    path.write_text(yaml.safe_dump({
        "base": {"preset": "synthetic", "set": {"data.root": str(data_root)}},
        "kind": "optuna", "num_samples": 2, "metric": "cam_miou",
        "search": {"loss.w_ptc": {"type": "float", "low": 0.1, "high": 0.3}},
    }))
    return path


def request(space, out, storage="", **kwargs) -> SweepRequest:
    return SweepRequest(space_path=str(space), output_dir=out, optuna_storage=storage, **kwargs)


def test_a_new_sweep_puts_its_study_in_the_given_database(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'head' / 'optuna.db'}"
    (tmp_path / "head").mkdir()
    sweep = prepare_sweep(request(space, tmp_path / "shared", storage))
    assert sweep.optuna_url == storage
    assert initial_state(sweep, "parent-id").optuna == OptunaStudy(storage=storage, study_name="hpo")


def test_without_a_database_the_study_stays_in_the_sweep_folder(space, tmp_path):
    sweep = prepare_sweep(request(space, tmp_path / "out"))
    assert sweep.optuna_url == f"sqlite:///{tmp_path / 'out' / 'sweeps' / 'hpo' / 'optuna.db'}"


def test_a_study_of_the_same_name_from_another_sweep_is_refused(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.create_study(storage=storage, study_name="hpo")  # e.g. a sweep under another --output-dir
    with pytest.raises(SweepError, match="already holds a study named 'hpo'.*another --name"):
        prepare_sweep(request(space, tmp_path / "out", storage))
    assert prepare_sweep(request(space, tmp_path / "out", storage, name="hpo-2")).optuna_url == storage


def test_an_unusable_database_is_refused_before_anything_starts(space, tmp_path):
    storage = f"sqlite:///{tmp_path / 'missing-folder' / 'optuna.db'}"
    with pytest.raises(SweepError, match="Optuna storage .*missing-folder.* cannot be opened"):
        prepare_sweep(request(space, tmp_path / "out", storage))


def test_a_resumed_sweep_keeps_the_database_it_started_with(space, tmp_path):
    first = f"sqlite:///{tmp_path / 'first.db'}"
    sweep = prepare_sweep(request(space, tmp_path / "out", first))
    write_state(sweep.dir, initial_state(sweep, "parent-id"))
    resumed = prepare_sweep(request(space, tmp_path / "out", f"sqlite:///{tmp_path / 'other.db'}"))
    assert resumed.resumed and resumed.optuna_url == first


def test_a_moved_sweep_folder_finds_its_own_study_again(space, tmp_path):
    sweep = prepare_sweep(request(space, tmp_path / "old"))
    state = initial_state(sweep, "parent-id")
    write_state(tmp_path / "new" / "sweeps" / "hpo", state)  # the folder, moved
    moved = prepare_sweep(request(space, tmp_path / "new"))
    assert moved.resumed and moved.optuna_url == f"sqlite:///{tmp_path / 'new' / 'sweeps' / 'hpo' / 'optuna.db'}"


def test_the_command_takes_the_database_from_the_environment(space, tmp_path, monkeypatch):
    monkeypatch.setenv(sweep_cli.OPTUNA_STORAGE_ENV, "sqlite:////home/ubuntu/toco-db/optuna.db")
    assert sweep_cli.build_request(sweep_cli.parse_args([str(space)])).optuna_storage == \
        "sqlite:////home/ubuntu/toco-db/optuna.db"
    given = sweep_cli.parse_args([str(space), "--optuna-storage", "sqlite:////x.db"])
    assert sweep_cli.build_request(given).optuna_storage == "sqlite:////x.db"
