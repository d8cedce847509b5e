"""End-to-end training on a real local Ray cluster (two CPU workers, DDP over gloo) with a real MLflow store."""

import pytest
import torch
from mlflow import MlflowClient
from ray.train import TrainingFailedError
from train_hooks import MARKER_FILE, FailOnce

from pipelines import train
from toco_ray.checkpointing import STATE_FILE, load_checkpoint
from toco_ray.distributed import TrainJob, launch
from toco_ray.distributed.probe import first_step
from toco_ray.tracking import DEFAULT_EXPERIMENT, resolve_tracking_uri

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_ITERS, EVAL_EVERY = 6, 3  # the tiny config: log every iteration, evaluate and checkpoint at 3 and 6


def _job(cfg, tmp_path, name, **kwargs) -> TrainJob:
    return TrainJob(
        cfg=cfg,
        output_dir=tmp_path,
        run_name=name,
        workers=2,
        cpus_per_worker=1,
        tracking_uri=resolve_tracking_uri(tmp_path),
        **kwargs,
    )


def _steps(client, run_id, key) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifacts(client, run_id, path=None) -> set[str]:
    out = set()
    for info in client.list_artifacts(run_id, path):
        out |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return out


def test_smoke_command_trains_two_workers_checkpoints_and_tracks_everything(
    ray_cluster, tiny_root, tiny_overrides, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "0")
    overrides = [f"--set={k}={v}" for k, v in tiny_overrides.items()]
    argv = [
        "--smoke",
        "--data-root",
        str(tiny_root),
        "--workers",
        "2",
        "--output-dir",
        str(tmp_path),
        "--run-name",
        "two-workers",
        *overrides,
    ]
    assert train.main(argv) == 0

    run_dir = tmp_path / "runs" / "two-workers"
    state = load_checkpoint(run_dir / "checkpoint_000006")
    assert state.iteration == MAX_ITERS and state.world_size == 2 and len(state.rng) == 2
    assert "model.proj_teacher.mlp.0.weight" in state.model  # the EMA teacher head is saved with the model
    assert (run_dir / "checkpoint_000003" / "state.pt").is_file()

    client = MlflowClient(tracking_uri=resolve_tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "two-workers"
    params = run.data.params
    assert params["train.global_batch"] == "4" and params["run.world_size"] == "2"
    assert params["run.global_batch"] == "4" and params["loss.w_ptc"] == "0.2" and params["data.crop_size"] == "64"
    every_step = list(range(1, MAX_ITERS + 1))
    for key in ("loss/total", "loss/cls", "loss/cls_aux", "loss/ptc", "loss/ctc", "lr", "throughput/images_per_s"):
        assert _steps(client, run.info.run_id, key) == every_step, key
    for key in ("loss/seg", "loss/reg"):  # switched on at iteration 3 (0-based): logged from step 4
        assert _steps(client, run.info.run_id, key) == [4, 5, 6], key
    for key in ("eval/cam_miou", "eval/aux_cam_miou", "eval/seg_miou", "baseline/all_background_miou"):
        assert _steps(client, run.info.run_id, key) == [3, 6], key
    for key in ("oversmoothing/block_01", "oversmoothing_fg_bg/block_01"):  # fg–fg needs two classes in an image
        assert _steps(client, run.info.run_id, key) == [3, 6], key
    assert 0.0 <= run.data.metrics["eval/cam_miou"] <= 1.0
    tags = run.data.tags
    assert len(tags["git.commit"]) == 40 or tags["git.commit"] == "unknown"
    assert tags["version.torch"] == torch.__version__.split("+")[0]
    assert tags["device.names"].startswith("2× cpu")
    assert {
        "config/config.yaml",
        "cam_overlays/iter_000003.png",
        "cam_overlays/iter_000006.png",
        "figures/oversmoothing.png",
        "confusion/iter_000003.png",
        "confusion/iter_000006.png",
        "final/per_class_iou.md",
        "final/per_class_iou.json",
    } <= _artifacts(client, run.info.run_id)
    # the overlays and confusion matrices are also MLflow images, one per evaluation step (the UI's image grid)
    images = {tuple(path.split("+")[:3]) for path in _artifacts(client, run.info.run_id, "images")}
    assert images == {(f"images/{key}", "step", str(step)) for key in ("cam_overlay", "confusion") for step in (3, 6)}


def test_one_worker_batch_4_equals_two_workers_batch_2(ray_cluster, tiny_cfg, tmp_path):
    # Every active term must be a per-image mean for exact equivalence: PTC pools token pairs over the batch and
    # CTC's crops come from a per-rank generator, so both are off here (seg/reg start later in any case).
    cfg = tiny_cfg(**{"loss.w_ptc": 0.0, "loss.w_ctc": 0.0})
    one = first_step(cfg, workers=1, out_dir=tmp_path / "one")
    two = first_step(cfg, workers=2, out_dir=tmp_path / "two")
    assert one.names == two.names  # the same 4 images, split 2 + 2
    assert set(one.losses) == {"total", "cls", "cls_aux"}
    for key, value in one.losses.items():
        assert two.losses[key] == pytest.approx(value, rel=1e-5), key
    assert one.grads.keys() == two.grads.keys() and len(one.grads) > 10
    for name, grad in one.grads.items():
        torch.testing.assert_close(two.grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_killed_worker_is_replaced_and_training_resumes_from_the_checkpoint(
    ray_cluster, tiny_cfg, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # rank 1 exits before iteration 4; the checkpoint is at 3
    job = _job(tiny_cfg(), tmp_path, "killed", max_failures=1, hooks=(FailOnce(iteration=4),))
    outcome = launch(job)

    assert (job.run_dir / MARKER_FILE).is_file()  # the fault did fire
    assert load_checkpoint(outcome.checkpoint_path).iteration == MAX_ITERS
    client = MlflowClient(tracking_uri=job.tracking_uri)
    run = client.get_run(outcome.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["restored_from_iteration"] == str(EVAL_EVERY)
    # no gap and no duplicate: every step exactly once although iterations 4.. ran twice
    assert _steps(client, run.info.run_id, "loss/total") == list(range(1, MAX_ITERS + 1))
    assert _steps(client, run.info.run_id, "eval/cam_miou") == [3, 6]


def test_resume_continues_the_iteration_count_and_the_mlflow_run_from_the_last_intact_checkpoint(
    ray_cluster, tiny_cfg, tmp_path, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tiny_cfg(**{"schedule.max_iters": 9})
    # fails before iteration 8, after the checkpoints at 3 and 6
    job = _job(cfg, tmp_path, "resumed", max_failures=0, hooks=(FailOnce(iteration=8),))
    with pytest.raises(TrainingFailedError):
        launch(job)
    client = MlflowClient(tracking_uri=job.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name(job.experiment).experiment_id])
    assert run.info.status == "FAILED"
    latest = job.run_dir / "checkpoint_000006" / STATE_FILE
    latest.write_bytes(latest.read_bytes()[:1000])  # case 27: the latest checkpoint damaged

    outcome = launch(_job(cfg, tmp_path, "resumed", resume=True))  # no failing hook this time
    assert outcome.mlflow_run_id == run.info.run_id
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED" and resumed.data.tags["restored_from_iteration"] == "3"
    assert load_checkpoint(outcome.checkpoint_path).iteration == 9
    assert _steps(client, run.info.run_id, "loss/total") == list(range(1, 10))
    assert _steps(client, run.info.run_id, "eval/seg_miou") == [3, 6, 9]
