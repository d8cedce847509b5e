"""Inference runs on a generated tree: Ray Data vs the serial loop, Parquet counts, resume, CRF, bad input, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import NUM_VAL, write_checkpoint
from PIL import Image

from pipelines.infer import main as infer_main
from toco_ray.data.labels import load_label_file
from toco_ray.inference import InferenceError, InferenceOptions, run_inference
from toco_ray.inference.checkpoint import load_for_inference

pytestmark = pytest.mark.integration

K = 21  # synthetic: background + 20 classes
SCALES = (1.0, 1.25)


def options(checkpoint, out, **overrides) -> InferenceOptions:
    # one CPU (one torch thread) per inference worker on both paths, so both compute identical numbers
    base = {"checkpoint": str(checkpoint), "split": "val", "out": str(out), "mlflow": False, "progress": False,
            "cpus_per_worker": 1.0}
    return InferenceOptions(**{**base, **overrides})


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def direct_miou(pred_dir: Path, root: Path, names: list[str]) -> float:
    """mIoU straight from the written PNGs and the ground-truth masks, independent of the pipeline's counts."""
    conf = np.zeros((K, K), np.int64)
    for name in names:
        pred = read_png(pred_dir / f"{name}.png").astype(np.int64)
        gt = read_png(root / "SegmentationClassAug" / f"{name}.png").astype(np.int64)
        keep = (gt != 255) & (pred != 255)
        conf += np.bincount(gt[keep] * K + pred[keep], minlength=K * K).reshape(K, K)
    return miou_of(conf)


def miou_of(conf: np.ndarray) -> float:
    """Mean IoU over the classes present in the ground truth (rows with pixels), the reference's rule."""
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0
    return float((tp[present] / union[present]).mean())


def val_names(root: Path) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()


@pytest.fixture(scope="module")
def seg_runs(checkpoint_dir, ray_cluster, tmp_path_factory):
    """The same multi-scale + CRF run twice: serial loop and Ray Data pipeline."""
    base = tmp_path_factory.mktemp("seg")
    serial = run_inference(options(checkpoint_dir, base / "serial", serial=True, crf=True, scales=SCALES))
    ray_run = run_inference(options(checkpoint_dir, base / "ray", crf=True, scales=SCALES))
    return serial, ray_run


@pytest.mark.slow  # the shared runs take ~45 s: the session's first Ray Data pipeline starts cold
def test_ray_pipeline_and_serial_loop_give_identical_predictions_and_miou(seg_runs, synthetic_root):
    serial, ray_run = seg_runs
    assert (serial["engine"], ray_run["engine"]) == ("serial", "ray-data")
    assert serial["num_done"] == ray_run["num_done"] == NUM_VAL
    for kind in ("seg", "seg_crf"):
        for name in val_names(synthetic_root):
            a = Path(serial["out_dir"], kind, f"{name}.png").read_bytes()
            b = Path(ray_run["out_dir"], kind, f"{name}.png").read_bytes()
            assert a == b, f"{kind}/{name}.png differs"
        assert serial["metrics"][kind] == ray_run["metrics"][kind]


@pytest.mark.slow  # the shared runs take ~45 s: the session's first Ray Data pipeline starts cold
def test_miou_from_parquet_counts_equals_a_direct_computation(seg_runs, synthetic_root):
    _, ray_run = seg_runs
    out = Path(ray_run["out_dir"])
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["name"] for r in table) == sorted(val_names(synthetic_root))
    for kind in ("seg", "seg_crf"):
        conf = np.zeros(K * K, np.int64)
        for r in table:  # sparse per-image counts: flat index gt·K + pred of the non-zero cells
            np.add.at(conf, np.asarray(r[f"conf_{kind}_index"], np.int64), np.asarray(r[f"conf_{kind}_count"]))
        from_parquet = miou_of(conf.reshape(K, K))
        direct = direct_miou(out / kind, synthetic_root, val_names(synthetic_root))
        assert from_parquet == pytest.approx(direct, abs=1e-12)
        assert ray_run["metrics"][kind]["miou"] == pytest.approx(direct, abs=1e-12)
    assert json.loads((out / "summary.json").read_text())["metrics"]["seg"]["miou"] == ray_run["metrics"]["seg"]["miou"]


@pytest.mark.slow  # the shared runs take ~45 s: the session's first Ray Data pipeline starts cold
def test_crf_changes_predictions(seg_runs, synthetic_root):
    _, ray_run = seg_runs
    changed = [
        (read_png(Path(ray_run["out_dir"], "seg", f"{n}.png")) != read_png(Path(ray_run["out_dir"], "seg_crf",
                                                                                 f"{n}.png"))).mean()
        for n in val_names(synthetic_root)
    ]
    assert min(changed) > 0.01  # every image: the CRF relabels more than 1 % of its pixels
    assert ray_run["throughput"]["crf_s_per_image"] > 0


def test_interrupted_run_resumes_with_only_the_missing_images_and_no_crf_is_skipped_cleanly(
    checkpoint_dir, ray_cluster, tmp_path, synthetic_root
):
    out = tmp_path / "resume"
    # stopped after 3 images (serial: cheaper, and where outputs come from does not matter to a resumed run)
    first = run_inference(options(checkpoint_dir, out, limit=3, serial=True))
    assert (first["num_processed"], first["num_done"]) == (3, 3)
    before = {p.name: p.stat().st_mtime_ns for p in (out / "seg").iterdir()}
    (out / "records" / ".val_00005.json.999.tmp").write_text("{")  # a write cut short by the interruption
    second = run_inference(options(checkpoint_dir, out))
    assert (second["num_processed"], second["num_resumed"], second["num_done"]) == (NUM_VAL - 3, 3, NUM_VAL)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "seg").iterdir() if p.name in before} == before
    # without --crf: no CRF outputs, no CRF time, only the plain segmentation is scored
    assert not (out / "seg_crf").exists()
    assert list(second["metrics"]) == ["seg"] and second["throughput"]["crf_s_per_image"] == 0.0
    assert second["metrics"]["seg"]["miou"] == pytest.approx(
        direct_miou(out / "seg", synthetic_root, val_names(synthetic_root)), abs=1e-12
    )


def test_final_inference_covers_the_whole_split_whatever_the_checkpoints_val_limit(
    tmp_path, tiny_cfg, synthetic_root
):
    import torch

    from toco_ray.config import apply_overrides
    from toco_ray.inference.checkpoint import build_inference_model

    cfg = apply_overrides(tiny_cfg, {"data.val_limit": 2})  # trained with a 2-image in-training validation
    torch.manual_seed(0)
    run_dir = tmp_path / "runs" / "limited"
    write_checkpoint(run_dir, 2, cfg, build_inference_model(cfg))
    summary = run_inference(options(run_dir, tmp_path / "out", serial=True, scales=(1.0,)))
    assert summary["num_done"] == NUM_VAL
    assert sorted(p.stem for p in (tmp_path / "out" / "seg").iterdir()) == sorted(val_names(synthetic_root))


def test_corrupt_image_fails_the_run_by_default_and_is_recorded_with_skip_bad(
    checkpoint_dir, ray_cluster, private_root, tmp_path
):
    (private_root / "JPEGImages" / "val_00002.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "bad"
    with pytest.raises(InferenceError, match=r"val_00002\.jpg.*--skip-bad"):
        run_inference(options(checkpoint_dir, out, data_root=str(private_root), serial=True))
    # resumes after the 2 images the failed run finished; the bad one travels through the Ray stages as a failure
    summary = run_inference(options(checkpoint_dir, out, data_root=str(private_root), skip_bad=True))
    assert (summary["engine"], summary["num_processed"], summary["num_resumed"]) == ("ray-data", NUM_VAL - 3, 2)
    assert (summary["num_skipped"], summary["skipped"], summary["num_done"]) == (1, ["val_00002"], NUM_VAL - 1)
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert [f["name"] for f in failures] == ["val_00002"] and failures[0]["file"].endswith("val_00002.jpg")
    good = [n for n in val_names(private_root) if n != "val_00002"]
    assert summary["metrics"]["seg"]["miou"] == pytest.approx(direct_miou(out / "seg", private_root, good), abs=1e-12)


def test_cam_pseudo_labels_match_between_paths_and_use_only_present_classes(
    checkpoint_dir, ray_cluster, tmp_path, synthetic_root
):
    runs = [
        run_inference(options(checkpoint_dir, tmp_path / engine, mode="cam", crf=True, limit=3, save_probs=True,
                              serial=engine == "serial"))
        for engine in ("serial", "ray")
    ]
    labels = load_label_file(synthetic_root / "cls_labels.npy", 20)
    for name in val_names(synthetic_root)[:3]:
        for kind in ("pseudo", "pseudo_crf"):
            a, b = (read_png(Path(r["out_dir"], kind, f"{name}.png")) for r in runs)
            np.testing.assert_array_equal(a, b)
            present = {0, 255, *(np.flatnonzero(labels[name]) + 1).tolist()}
            assert set(np.unique(a).tolist()) <= present
        h, w = read_png(Path(runs[1]["out_dir"], "pseudo", f"{name}.png")).shape
        cam = np.load(Path(runs[1]["out_dir"], "probs", f"{name}.npy"))  # --save-probs: the CAM at 1/4 size
        assert cam.dtype == np.float16 and cam.shape == (20, round(h / 4), round(w / 4))
    metrics = runs[1]["metrics"]
    assert list(metrics) == ["cam", "cam_aux", "pseudo", "pseudo_crf"]
    assert 0 < metrics["pseudo"]["coverage"] <= 1 and "coverage" not in metrics["cam"]


def test_cli_smoke_with_a_random_network(tmp_path, capsys):
    summary = infer_main(["--checkpoint", "random", "--smoke", "--crf", "--serial", "--out", str(tmp_path / "smoke"),
                          "--output-dir", str(tmp_path), "--no-mlflow", "--no-progress"])
    assert (summary["num_done"], summary["smoke"], summary["final_kind"]) == (4, True, "seg_crf")
    assert len(list((tmp_path / "smoke" / "overlays").glob("*.png"))) == 4
    with pytest.raises(SystemExit) as exit_:
        infer_main(["--checkpoint", "random", "--no-mlflow"])
    assert exit_.value.code == 2 and "needs --smoke" in capsys.readouterr().err


def test_results_are_logged_to_mlflow_under_the_training_run(checkpoint_dir, tmp_path, tiny_cfg, mlflow_uri):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("toco-ray").experiment_id
    parent = client.create_run(experiment, run_name="training").info.run_id
    model, _ = load_for_inference(str(checkpoint_dir))
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, 4, tiny_cfg, model, mlflow_run_id=parent)
    summary = run_inference(options(run_dir, tmp_path / "out", serial=True, limit=2, mlflow=True,
                                    tracking_uri=mlflow_uri, output_dir=str(tmp_path)))
    child = client.get_run(summary["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent and child.info.experiment_id == experiment
    assert child.data.metrics["seg/miou"] == pytest.approx(summary["metrics"]["seg"]["miou"])
    assert "throughput/images_per_s" in child.data.metrics
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"summary.json", "per_class_iou.md", "results.parquet", "overlays"} <= artifacts


def test_pipeline_datasets_carry_our_data_context_and_leave_the_global_one_alone(ray_cluster):
    # Regression: a dataset runs with the copy of the DataContext current when it was created, so settings made
    # around the iteration never applied and per-operator reservation kept the CRF stage near serial speed
    # (bench_crf: 1.00× before, 1.72× after).
    from toco_ray.inference.pipeline import crf_stage_input, dataset_of

    for ds in (dataset_of([{"index": 0}]), crf_stage_input([{"name": "a", "probs": np.zeros((2, 3, 4))}])):
        derived = ds.map_batches(lambda batch: batch, batch_size=1)
        for context in (ds.context, derived.context):
            assert not context.op_resource_reservation_enabled and not context.enable_progress_bars
    current = ray_cluster.data.DataContext.get_current()
    assert current.op_resource_reservation_enabled and current.enable_progress_bars
