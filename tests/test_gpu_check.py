"""pipelines.gpu_check: the CPU smoke run with Ray, MLflow, pydantic, pydensecrf, matplotlib, pandas and numba made
absent, and the one-line failure when CUDA is asked for but missing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
ABSENT = ("ray", "mlflow", "pydantic", "pydensecrf", "matplotlib", "pandas", "numba")  # not installed on the GPU box

# Loaded before anything else (sitecustomize): each package above looks not installed, as on the GPU box, and the
# names of any that got imported anyway are written at exit.
SITECUSTOMIZE = f'''
import atexit, importlib.abc, importlib.machinery, json, os, sys

ABSENT = {ABSENT!r}


class _Absent(importlib.abc.Loader):
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}}", name=spec.name)

    def exec_module(self, module):
        raise ModuleNotFoundError(module.__name__)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ABSENT:
            return importlib.machinery.ModuleSpec(name, _Absent())
        return None


sys.meta_path.insert(0, _Finder())


@atexit.register
def _report():
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] in ABSENT and sys.modules[m] is not None)
    with open(os.environ["ABSENT_REPORT"], "w") as fh:
        json.dump({{"loaded": loaded, "toco_ray": sys.modules["toco_ray"].__file__}}, fh)
'''


def run_gpu_check(tmp_path, *args, env=None):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, **(env or {}), "ABSENT_REPORT": str(tmp_path / "absent.json"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(site), str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "pipelines.gpu_check", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cpu_tiny_run_needs_only_torch_and_timm(tmp_path):
    out = tmp_path / "gpu.json"
    proc = run_gpu_check(tmp_path, "--device", "cpu", "--tiny", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "absent.json").read_text())
    assert report["loaded"] == []
    assert report["toco_ray"].startswith(str(REPO))  # this checkout, not another install
    results = json.loads(out.read_text())
    assert results["preset"] == "synthetic"
    training = results["training"]
    assert training["fused_attention_layers"] == "4/4"
    assert set(training["fp32_losses"]) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg", "total"}
    assert training["bf16_ok"] and training["bf16_total_rel_diff"] <= 0.02
    assert all(training[f"{v}_images_per_s"] > 0 for v in ("fp32", "bf16", "reference_fp32"))
    assert results["cpu_vs_device"]["ok"] and results["energy"]["ok"] and results["rng"]["ok"]
    assert results["distributed"]["backend"] == "gloo" and results["distributed"]["ok"]
    assert results["inference"]["final_scales"] == [1.0, 1.25, 1.5]
    assert results["inference"]["final_images_per_s"] > 0
    assert "step bf16" in proc.stdout and "torch.distributed gloo" in proc.stdout


def test_cuda_without_a_gpu_is_one_line_and_exit_2(tmp_path):
    proc = run_gpu_check(tmp_path, "--device", "cuda", env={"CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "gpu_check.json").exists()


def test_the_energy_check_leaves_its_inputs_alone_so_a_second_device_gets_a_gradient():
    # On the CPU ``.to`` returns the tensor itself: marking it as requiring grad made the CUDA copy of the second
    # call a non-leaf without ``.grad`` (seen on the first H200 run).
    from toco_ray import device_check as dc
    from toco_ray.config import build_config
    from toco_ray.losses import DenseEnergyLoss

    cfg = build_config("synthetic", {"train.global_batch": 1, "data.crop_size": 32})
    inputs = dc.energy_inputs(cfg, torch.Generator().manual_seed(0))
    loss_fn = DenseEnergyLoss.from_config(cfg.loss)
    first = dc.energy_value_and_grad(loss_fn, inputs, torch.device("cpu"))
    second = dc.energy_value_and_grad(loss_fn, inputs, torch.device("cpu"))
    assert not inputs["logits"].requires_grad
    assert first[0] == second[0] and torch.equal(first[1], second[1])


def test_a_compiler_failure_is_a_table_row_not_a_traceback(monkeypatch):
    from pipelines import gpu_check
    from toco_ray import device_check as dc

    def broken_compiler(plan):
        raise RuntimeError("SubprocException: ...\nValueError('Scalar 20316834720 is out of range for type int32')")

    monkeypatch.setattr(dc, "check_compile", broken_compiler)
    result = gpu_check.run_compile_check(dc.CheckPlan(torch.device("cpu"), compile_backend="inductor"))
    assert result["error"] == "RuntimeError: ValueError('Scalar 20316834720 is out of range for type int32')"
    cells = gpu_check._compile_row(result)
    assert cells[0] == "torch.compile (inductor)" and cells[1].startswith("failed after 0 s: RuntimeError")
