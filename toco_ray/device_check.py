"""Checks and timings of ToCo's training, loss and inference paths on one device (what ``pipelines.gpu_check`` runs).

Torch, timm, numpy and Pillow only: no Ray, MLflow, pydensecrf or matplotlib, so it runs on a bare GPU box. Every
``check_*`` function returns a flat dict of JSON-ready values (numbers, strings, booleans, None); the ``*_ok``
entries are the verdicts. The same code runs on CPU (``device="cpu"``): comparisons that need two devices then
compare CPU with CPU, which exercises the code but proves nothing about CUDA.

Example:
    >>> plan = CheckPlan.tiny(torch.device("cpu"))
    >>> check_training(plan)["bf16_total_rel_diff"]
"""

from __future__ import annotations

import contextlib
import copy
import socket
import time
from dataclasses import dataclass

import numpy as np
import timm
import torch
import torch.distributed as dist
from timm.layers import Attention
from torch.nn.parallel import DistributedDataParallel

from toco_ray.benchmark import random_batch, synchronize, time_train_steps
from toco_ray.checkpointing import capture_rng, restore_rng
from toco_ray.config import ToCoConfig, build_config
from toco_ray.data.synthetic import render_sample
from toco_ray.data.transforms import resize_image
from toco_ray.engine import ToCoObjective, autocast, box_mask, build_objective, loss_values, to_device, train_step
from toco_ray.inference.predict import image_tensor, predict_cam_label, predict_cams, predict_seg
from toco_ray.losses import DenseEnergyLoss
from toco_ray.models import build_model
from toco_ray.optim import build_optimizer, build_scheduler

BF16_TOLERANCE = 0.02  # bf16 vs fp32 total loss, relative (issue target)
# CPU vs CUDA, fp32 with TF32 off, per loss term: |a − b| ≤ atol + rtol·|a|. Summation order differs between the
# devices (≈1e-6 relative); the margin covers pseudo labels of a few tokens lying within rounding of a threshold.
DEVICE_RTOL, DEVICE_ATOL = 1e-3, 1e-6
ENERGY_RTOL = 1e-4  # energy value, CUDA vs CPU: same lattice, different float summation order (index_add)
ENERGY_GRAD_RTOL = 1e-3  # ‖g_cuda − g_cpu‖ / ‖g_cpu‖ of the energy's gradient w.r.t. the logits
VOC_SIZE = (375, 500)  # (H, W) of a typical VOC image: the final inference resolution
FINAL_SCALES = build_config("voc").eval.scales  # 1.0, 1.25, 1.5 + flip (ref VOC protocol)
# The CPU-vs-device comparison: small enough for a CPU step in a second, every loss term on at iteration 0.
TINY_BATCH = {
    "data.crop_size": 64,
    "ctc.local_crop_size": 24,
    "ctc.n_local_crops": 2,
    "model.depth": 2,
    "model.aux_layer": -1,
    "train.global_batch": 2,
    "schedule.seg_start_iter": 0,
}


@dataclass
class CheckPlan:
    """What to run: device, preset and how many steps/images to time.

    Attributes:
        device: where the checks run.
        preset: config preset of the training and inference checks (``voc``, or ``synthetic`` for ``--tiny``).
        steps: timed training steps per variant.
        warmup: untimed training steps first (at least one).
        images: images timed per inference mode.
        compile_backend: ``torch.compile`` backend of the compile check.
    """

    device: torch.device
    preset: str = "voc"
    steps: int = 5
    warmup: int = 2
    images: int = 8
    compile_backend: str = "inductor"

    @classmethod
    def tiny(cls, device: torch.device) -> CheckPlan:
        """The synthetic preset with the fewest steps that still time something (CPU smoke run)."""
        return cls(device, preset="synthetic", steps=1, warmup=1, images=1)

    def config(self) -> ToCoConfig:
        """The preset with random weights, every loss term on, and the VOC final-inference scales."""
        overrides = {"model.pretrained": False, "eval.scales": FINAL_SCALES}
        if self.preset == "synthetic":
            overrides["train.global_batch"] = 4  # the voc global batch, so img/s compare
        return build_config(self.preset, overrides)


# --- environment -----------------------------------------------------------------------------------------
def environment(device: torch.device) -> dict:
    """Versions, device name and the attention/precision switches that decide the fast path."""
    info = {
        "device": device_name(device),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "timm_fused_attn": timm.layers.use_fused_attn(),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,  # torch's default is off: fp32 rows are true fp32
    }
    if device.type == "cuda":
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return info


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def fused_attention_blocks(model: torch.nn.Module) -> tuple[int, int]:
    """``(fused, total)``: timm attention layers that call ``scaled_dot_product_attention``, and all of them.

    timm decides per layer at construction (``Attention.fused_attn = timm.layers.use_fused_attn()``: on unless
    ``TIMM_FUSED_ATTN=0``, export mode, or a torch without SDPA); every encoder pass, CAM passes included, goes
    through these layers.
    """
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    return sum(bool(m.fused_attn) for m in layers), len(layers)


# --- training step ---------------------------------------------------------------------------------------
def one_forward(objective: ToCoObjective, batch: dict, iteration: int, dtype: torch.dtype | None) -> dict:
    """Loss terms (floats) of one forward without gradients; the crop sampler is left as it was."""
    state = objective.generator_state()
    with torch.no_grad(), autocast(batch["image"].device.type, dtype):
        losses = objective(batch, iteration)
    objective.set_generator_state(state)
    return loss_values(losses)


def relative_diffs(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: abs(a[k] - b[k]) / max(abs(a[k]), 1e-12) for k in a}


def check_training(plan: CheckPlan) -> dict:
    """Training step at the plan's preset: ours fp32 and bf16 vs the reference-style re-encoding step in fp32.

    Returns img/s, s/step and peak memory of each variant, the speed-ups over the reference, and the relative
    difference of the bf16 and fp32 losses on the same batch and weights. bf16 autocast runs on CPU too here (it
    is not what CPU training does; it exercises the code).
    """
    cfg, device = plan.config(), plan.device
    torch.manual_seed(0)
    master = build_objective(cfg, seed=0)
    batch = to_device(random_batch(cfg, torch.Generator().manual_seed(0)), device)
    iteration = max(cfg.schedule.seg_start_iter, cfg.schedule.contrast_start_iter)
    objective = copy.deepcopy(master).to(device)
    fp32 = one_forward(objective, batch, iteration, None)
    bf16 = one_forward(objective, batch, iteration, torch.bfloat16)
    diffs = relative_diffs(fp32, bf16)
    fused, total = fused_attention_blocks(objective)
    del objective
    out = {
        "preset": cfg.preset,
        "global_batch": cfg.train.global_batch,
        "crop_size": cfg.data.crop_size,
        "fused_attention_layers": f"{fused}/{total}",
        "fp32_losses": fp32,
        "bf16_losses": bf16,
        "bf16_total_rel_diff": diffs["total"],
        "bf16_max_term_rel_diff": max(diffs.values()),
        "bf16_worst_term": max(diffs, key=diffs.get),
        "bf16_worst_term_abs_diff": abs(fp32[max(diffs, key=diffs.get)] - bf16[max(diffs, key=diffs.get)]),
        "bf16_ok": diffs["total"] <= BF16_TOLERANCE,
    }
    variants = {"fp32": (False, None), "bf16": (False, torch.bfloat16), "reference_fp32": (True, None)}
    for name, (reencode, dtype) in variants.items():
        objective = copy.deepcopy(master).to(device)
        objective.reencode = reencode
        timing = time_train_steps(objective, cfg, batch, plan.steps, plan.warmup, dtype)
        out[f"{name}_images_per_s"] = timing.images_per_s
        out[f"{name}_s_per_step"] = timing.seconds_per_step
        out[f"{name}_peak_memory_gib"] = timing.peak_memory_gib
        del objective
        release_memory(device)
    for name in ("fp32", "bf16"):
        out[f"{name}_vs_reference"] = out[f"{name}_images_per_s"] / out["reference_fp32_images_per_s"]
    return out


def release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --- CPU vs device ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def full_fp32():
    """TF32 off for CUDA matmuls and convolutions (cuDNN allows TF32 convolutions by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def tiny_config() -> ToCoConfig:
    return build_config("synthetic", {**TINY_BATCH, "model.pretrained": False})


def check_cpu_vs_device(plan: CheckPlan) -> dict:
    """The loss terms of one fp32 forward on a fixed tiny batch, on CPU and on the device, agree term by term.

    Tolerance: ``|cpu − device| ≤ DEVICE_ATOL + DEVICE_RTOL·|cpu|`` per term, TF32 off.
    """
    cfg = tiny_config()
    torch.manual_seed(0)
    cpu_objective = build_objective(cfg, seed=0)
    device_objective = copy.deepcopy(cpu_objective).to(plan.device)
    batch = random_batch(cfg, torch.Generator().manual_seed(1))
    with full_fp32():
        on_cpu = one_forward(cpu_objective, batch, 0, None)
        on_device = one_forward(device_objective, to_device(batch, plan.device), 0, None)
    worst = max(abs(on_cpu[k] - on_device[k]) - DEVICE_RTOL * abs(on_cpu[k]) for k in on_cpu)
    return {
        "compared": f"cpu vs {plan.device.type}",
        "cpu_losses": on_cpu,
        "device_losses": on_device,
        "max_rel_diff": max(relative_diffs(on_cpu, on_device).values()),
        "tolerance": f"|a-b| <= {DEVICE_ATOL:g} + {DEVICE_RTOL:g}*|a| per term, fp32, TF32 off",
        "ok": worst <= DEVICE_ATOL,
    }


# --- dense energy loss -----------------------------------------------------------------------------------
def energy_inputs(cfg: ToCoConfig, generator: torch.Generator) -> dict:
    """A training-like input of the energy loss at ``cfg``'s crop size: synthetic photographs (smooth regions and
    texture, as real images), random logits, a valid box with padding, pseudo labels with unlabelled pixels."""
    b, s, k = cfg.train.global_batch, cfg.data.crop_size, cfg.model.num_classes + 1
    images = np.stack([resize_image(render_sample(np.random.default_rng([7, i]))[0], (s, s)) for i in range(b)])
    box = torch.tensor([[0, s, 0, s - s // 8]] * b)
    labels = torch.randint(0, k, (b, s, s), generator=generator)
    labels[:, : s // 4] = 255
    return {
        "images_255": torch.from_numpy(images).permute(0, 3, 1, 2).float(),
        "logits": torch.randn(b, k, s, s, generator=generator),
        "roi_mask": box_mask(box, (b, s, s)),
        "seg_label": labels,
    }


def energy_value_and_grad(loss_fn: DenseEnergyLoss, inputs: dict, device: torch.device) -> tuple[float, torch.Tensor]:
    # detached first: on the CPU ``.to`` returns the input itself, and a second call would then see a tensor that
    # requires grad, whose device copy is no leaf and gets no ``.grad``
    logits = inputs["logits"].detach().to(device).requires_grad_(True)
    loss = loss_fn(inputs["images_255"].to(device), logits.softmax(1), inputs["roi_mask"].to(device),
                   inputs["seg_label"].to(device))
    loss.backward()
    return float(loss.detach()), logits.grad.cpu()


def check_energy(plan: CheckPlan) -> dict:
    """The dense energy loss on the device vs CPU (value and gradient w.r.t. the logits), and its time per call
    (forward + backward) at the preset's crop size and global batch."""
    cfg = plan.config()
    loss_fn = DenseEnergyLoss.from_config(cfg.loss)
    inputs = energy_inputs(cfg, torch.Generator().manual_seed(0))
    cpu_value, cpu_grad = energy_value_and_grad(loss_fn, inputs, torch.device("cpu"))
    value, grad = energy_value_and_grad(loss_fn, inputs, plan.device)
    times = []
    for _ in range(max(plan.steps, 1)):
        synchronize(plan.device)
        start = time.perf_counter()
        energy_value_and_grad(loss_fn, inputs, plan.device)
        synchronize(plan.device)
        times.append(time.perf_counter() - start)
    value_diff = abs(value - cpu_value) / abs(cpu_value)
    grad_diff = float((grad - cpu_grad).norm() / cpu_grad.norm())
    return {
        "compared": f"cpu vs {plan.device.type}",
        "size": f"{cfg.train.global_batch}x{cfg.data.crop_size}x{cfg.data.crop_size}",
        "cpu_value": cpu_value,
        "device_value": value,
        "value_rel_diff": value_diff,
        "grad_rel_diff": grad_diff,
        "seconds": sum(times) / len(times),
        "ok": value_diff <= ENERGY_RTOL and grad_diff <= ENERGY_GRAD_RTOL,
    }


# --- inference -------------------------------------------------------------------------------------------
def check_inference(plan: CheckPlan) -> dict:
    """Final inference (multi-scale + flip segmentation at 500×375) and CAM pseudo labels, images/s.

    Both in fp32, as the inference actors run them; the CRF (pydensecrf, CPU) is not part of it.
    """
    cfg, device = plan.config(), plan.device
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    images = [resize_image(render_sample(np.random.default_rng([9, i]))[0], VOC_SIZE) for i in range(plan.images)]
    label = torch.zeros(cfg.model.num_classes)
    label[:2] = 1.0

    def final(image):
        return predict_seg(model, image_tensor(image, device), cfg.eval.scales).argmax(1).cpu()

    def pseudo(image):
        cam, _ = predict_cams(model, image, cfg.cam.scales, cfg.data.val_size, device)
        return predict_cam_label(cam[0].cpu(), label, cfg.cam.bkg_high, cfg.cam.bkg_low)

    out = {"image_size": f"{VOC_SIZE[1]}x{VOC_SIZE[0]}", "final_scales": list(cfg.eval.scales),
           "cam_scales": list(cfg.cam.scales)}
    for name, run in (("final", final), ("cam_pseudo_labels", pseudo)):
        run(images[0])  # warm-up: allocator, kernel selection
        synchronize(device)
        start = time.perf_counter()
        for image in images:
            run(image)
        synchronize(device)
        out[f"{name}_images_per_s"] = len(images) / (time.perf_counter() - start)
    return out


# --- torch.distributed -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_distributed(plan: CheckPlan) -> dict:
    """``torch.distributed`` with world size 1: NCCL on CUDA (gloo on CPU) init, an all-reduce, and one training
    step of the objective wrapped in DistributedDataParallel as Ray Train wraps it."""
    device = plan.device
    backend = "nccl" if device.type == "cuda" else "gloo"
    start = time.perf_counter()
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1, **kwargs)
    try:
        init_s = time.perf_counter() - start
        values = torch.arange(4, dtype=torch.float32, device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        all_reduce_ok = values.tolist() == [0.0, 1.0, 2.0, 3.0]
        cfg = tiny_config()
        torch.manual_seed(0)
        objective = build_objective(cfg, seed=0).to(device)
        before = [p.detach().clone() for p in objective.parameters()]
        ids = [device.index] if device.type == "cuda" else None  # the plan's CUDA device carries its index
        ddp = DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)
        optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
        batch = to_device(random_batch(cfg, torch.Generator().manual_seed(2)), device)
        stats = train_step(ddp, optimizer, scheduler, batch, 0, None)
        moved = sum(not torch.equal(a, b) for a, b in zip(before, objective.parameters()))
    finally:
        dist.destroy_process_group()
    return {
        "backend": backend,
        "init_s": init_s,
        "all_reduce_ok": all_reduce_ok,
        "ddp_step_loss": stats["total"],
        "ddp_params_updated": moved,
        "ok": all_reduce_ok and np.isfinite(stats["total"]) and moved > 0,
    }


def check_rng(device: torch.device) -> dict:
    """Capturing and restoring the RNG states (as checkpoints do) replays the same draws on the device."""
    state = capture_rng()
    first = torch.randn(8, device=device).cpu()
    restore_rng(state)
    again = torch.randn(8, device=device).cpu()
    return {"device_rng_restored": bool(torch.equal(first, again)), "ok": bool(torch.equal(first, again))}


# --- torch.compile ---------------------------------------------------------------------------------------
def check_compile(plan: CheckPlan) -> dict:
    """The training step with the objective under ``torch.compile`` (bf16 autocast on CUDA, fp32 on CPU): time to
    the first step (compilation included) and steady images/s."""
    cfg, device = plan.config(), plan.device
    torch.manual_seed(0)
    objective = build_objective(cfg, seed=0).to(device)
    objective.compile(backend=plan.compile_backend)
    batch = to_device(random_batch(cfg, torch.Generator().manual_seed(0)), device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    timing = time_train_steps(objective, cfg, batch, plan.steps, plan.warmup, dtype)
    return {
        "backend": plan.compile_backend,
        "precision": "bf16" if dtype else "fp32",
        "first_step_s": timing.first_step_s,
        "images_per_s": timing.images_per_s,
        "peak_memory_gib": timing.peak_memory_gib,
    }
