"""pipelines.bench_loader --smoke: the loader benchmark runs and its figures are consistent."""

import json

import pytest

from pipelines import bench_loader

pytestmark = pytest.mark.unit


def test_smoke_times_the_three_views_and_sizes_the_loader_cores(tmp_path, capsys):
    figures = bench_loader.main(["--smoke", "--gpu-images-per-s", "30", "--json", str(tmp_path / "f.json")])
    assert figures["crop_size"] == 448 and figures["images"] == 4
    assert figures["images_per_core_s"] > 0 and figures["loader_images_per_s"] > 0
    assert figures["loader_cores_per_gpu"] == pytest.approx(30 / figures["images_per_core_s"])
    assert figures["loader_cpus_per_gpu"] == 7  # g5.2xlarge: 8 vCPU, one for the training loop
    assert figures["gpu_fed"] == (figures["loader_cores_per_gpu"] <= 7)
    assert json.loads((tmp_path / "f.json").read_text()) == figures
    assert "loader cores" in capsys.readouterr().out


def test_the_gpu_rate_comes_from_a_gpu_check_json(tmp_path):
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps({"environment": {"device": "NVIDIA A10G"}, "training": {"bf16_images_per_s": 5.5}}))
    rate, source = bench_loader.gpu_rate(bench_loader.parse_args(["--gpu-check", str(path)]))
    assert rate == 5.5 and "A10G" in source
