import socket

import numpy as np
import pytest
from matplotlib.figure import Figure
from mlflow import MlflowClient

from pipelines.tracking_server import experiment_links
from toco_ray.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    RUN_NAME_TAG,
    RunLogger,
    TrackingError,
    artifact_root,
    check_tracking_uri,
    command_line,
    device_tags,
    end_run,
    path_tag,
    provenance_tags,
    resolve_tracking_uri,
    run_params,
    run_ui_hint,
    run_url,
    runs_view_url,
    start_run,
    tagged_path,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root(tmp_path)


def test_tracking_uri_defaults_to_sqlite_under_the_output_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert artifact_root(tmp_path) == f"{tmp_path.resolve()}/mlartifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert resolve_tracking_uri(tmp_path) == "http://tracking.example:5000"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused at once


def test_unreachable_server_is_a_clear_error():
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TrackingError, match="not reachable"):
        check_tracking_uri(uri, timeout_s=2)


def test_sqlite_store_needs_a_writable_folder(tmp_path):
    check_tracking_uri(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")  # creatable: fine
    assert (tmp_path / "new").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TrackingError, match="cannot be created"):
        check_tracking_uri(f"sqlite:///{blocker / 'sub' / 'mlflow.db'}")


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "/tmp/mlruns", "ftp://host/x"])
def test_file_store_and_unknown_schemes_are_refused(uri):
    with pytest.raises(TrackingError, match="file store|unsupported scheme"):
        check_tracking_uri(uri)


def test_run_is_created_once_and_found_again_by_name(store):
    uri, artifacts = store
    run_id = start_run(uri, "exp", "run-a", artifacts)
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).data.tags[RUN_NAME_TAG] == "run-a"
    assert client.get_experiment_by_name("exp").artifact_location == artifacts
    with pytest.raises(TrackingError, match="already exists"):
        start_run(uri, "exp", "run-a", artifacts)
    end_run(uri, run_id, "FAILED")
    assert start_run(uri, "exp", "run-a", artifacts, resume=True) == run_id
    assert client.get_run(run_id).info.status == "RUNNING"
    with pytest.raises(TrackingError, match="cannot resume"):
        start_run(uri, "exp", "run-b", artifacts, resume=True)


def test_metrics_are_logged_once_per_step_even_across_restarts(store):
    uri, artifacts = store
    run_id = start_run(uri, "exp", "run", artifacts)
    logger = RunLogger(uri, run_id)
    for step in (10, 20, 30):
        logger.log_metrics({"loss/total": step / 10}, step=step)
    # a restarted worker replays steps 20 and 30 from a checkpoint at 10, then goes on to 40
    replay = RunLogger(uri, run_id)
    assert replay.log_metrics({"loss/total": 9.0}, step=20) == {}
    assert replay.log_metrics({"loss/total": 9.0, "lr": 0.1}, step=30) == {"lr": 0.1}
    replay.log_metrics({"loss/total": 4.0}, step=40)
    history = MlflowClient(tracking_uri=uri).get_metric_history(run_id, "loss/total")
    assert sorted((m.step, m.value) for m in history) == [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]


def test_params_are_immutable_unless_changes_are_allowed(store):
    uri, artifacts = store
    run_id = start_run(uri, "exp", "run", artifacts)
    logger = RunLogger(uri, run_id)
    params = run_params({f"k.{i}": i for i in range(150)}, world_size=2)  # > 100: needs two batches
    params["scales"] = (1.0, 0.5)
    logger.log_params(params)
    logged = MlflowClient(tracking_uri=uri).get_run(run_id).data.params
    assert len(logged) == 152 and logged["run.world_size"] == "2" and logged["scales"] == "[1.0, 0.5]"
    logger.log_params({"k.1": 1})  # same value again: fine
    with pytest.raises(TrackingError, match="cannot change"):
        logger.log_params({"k.1": 5})
    logger.log_params({"k.1": 5}, allow_changes=True)
    assert MlflowClient(tracking_uri=uri).get_run(run_id).data.tags["changed.k.1"] == "1 -> 5"


def test_artifacts_land_in_the_run(store):
    uri, artifacts = store
    run_id = start_run(uri, "exp", "run", artifacts)
    logger = RunLogger(uri, run_id)
    fig = Figure()
    fig.subplots().imshow(np.eye(4))
    logger.log_figure(fig, "figures/eye.png")
    logger.log_text("| a |\n", "final/table.md")
    client = MlflowClient(tracking_uri=uri)
    assert [f.path for f in client.list_artifacts(run_id, "figures")] == ["figures/eye.png"]
    assert [f.path for f in client.list_artifacts(run_id, "final")] == ["final/table.md"]
    assert [f.path for f in client.list_artifacts(run_id)] == ["figures", "final"]  # no image without a key
    # with a key, the same picture is also an MLflow image at its step (the UI's image grid and step slider)
    for step in (3, 6):
        logger.log_figure(fig, f"cam_overlays/iter_{step}.png", key="cam_overlay", step=step)
    images = [f.path for f in client.list_artifacts(run_id, "images") if f.path.endswith(".png")]
    assert sorted(path.split("+")[:3] for path in images) == [["images/cam_overlay", "step", "3"],
                                                             ["images/cam_overlay", "step", "6"]]
    assert len(client.list_artifacts(run_id, "cam_overlays")) == 2


def test_provenance_and_device_tags():
    tags = provenance_tags()
    assert len(tags["git.commit"]) in (40, 7) or tags["git.commit"] == "unknown"
    assert tags["version.torch"] != "not installed" and tags["version.mlflow"] != "not installed"
    assert device_tags(["cpu (x)", "cpu (x)"]) == {
        "device.rank0": "cpu (x)",
        "device.rank1": "cpu (x)",
        "device.names": "2× cpu (x)",
    }


def test_a_run_shows_its_title_and_is_found_again_by_its_name(store):
    uri, artifacts = store
    run_id = start_run(uri, "exp", "demo-p02-ptc-s0", artifacts, title="+PTC s0 · p02")
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.run_name == "+PTC s0 · p02" and run.data.tags[RUN_NAME_TAG] == "demo-p02-ptc-s0"
    end_run(uri, run_id)
    assert start_run(uri, "exp", "demo-p02-ptc-s0", artifacts, resume=True) == run_id
    # the experiment is marked as model development: MLflow 3 stops asking what kind it is
    assert client.get_experiment_by_name("exp").tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def test_links_open_the_runs_table_not_the_genai_page(store):
    uri, artifacts = store
    run_id = start_run(uri, "exp", "run-a", artifacts)
    experiment_id = MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    assert runs_view_url(uri, experiment_id) == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    assert run_url("http://10.0.0.5:5000/", "7", "abc") == (
        "http://10.0.0.5:5000/#/experiments/7/runs/abc?workflowType=machine_learning")
    hint = run_ui_hint(uri, run_id)  # a local store: the link, and the command that serves it
    assert hint == f"MLflow: {runs_view_url(uri, experiment_id)}  (serve it: mlflow ui --backend-store-uri {uri})"
    assert experiment_links(uri) == [f"runs of exp: {runs_view_url(uri, experiment_id)}"]


def test_the_command_tag_is_the_command_as_typed():
    assert command_line(["/repo/pipelines/sweep.py", "space.yaml", "--smoke"]) == (
        "python -m pipelines.sweep space.yaml --smoke")
    assert command_line(["tool.py", "-x"]) == "python tool.py -x"
    assert provenance_tags()["command"] == command_line()


def test_paths_in_tags_are_relative_to_the_local_store_and_read_back(tmp_path):
    local = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    run_dir = tmp_path / "out" / "sweeps" / "demo" / "runs" / "demo-p00"
    assert path_tag(run_dir, local) == "sweeps/demo/runs/demo-p00"
    assert tagged_path("sweeps/demo/runs/demo-p00", local) == run_dir
    # outside the store's folder, or with a tracking server: the absolute path
    assert path_tag(tmp_path / "elsewhere", local) == str(tmp_path / "elsewhere")
    assert path_tag(run_dir, "http://head:5000") == str(run_dir)
    assert tagged_path(str(run_dir), "http://head:5000") == run_dir
