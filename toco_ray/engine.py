"""One ToCo training step (SPEC §6), usable by a plain loop and by the distributed trainer.

The whole step's computation lives in :class:`ToCoObjective.forward`, so DDP can wrap the objective and see one
forward per iteration. The main image is encoded once with gradients; that single pass feeds the classifiers,
PTC, the decoder, the student head (its class token), the teacher head (the same class token, detached) and the
scale-1.0 half of the multi-scale CAM. The reference encodes it three times (forward, teacher, student) plus
once more for the CAM; ``reencode=True`` reproduces that for benchmarks and equivalence tests.

Precision: under bf16 autocast (``train.autocast``, CUDA only) the encoder, classifiers, heads and decoder run in
bf16; every loss term, PAR and the energy loss run in fp32. :func:`train_step` brings the loss terms to the host in
one copy after the optimiser step, so nothing in the step waits on the GPU for them.

Example:
    >>> objective = build_objective(build_config("synthetic"), seed=0)
    >>> optimizer = build_optimizer(objective.model.param_groups(), cfg.optim)
    >>> scheduler = build_scheduler(optimizer, cfg.optim, cfg.schedule.max_iters)
    >>> stats = train_step(objective, optimizer, scheduler, batch, iteration=0)
    >>> stats["total"], stats["lr"]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.cam import cam_to_roi, cam_to_token_labels, multiscale_cam
from toco_ray.config import CHOICES, REFERENCE_ENERGY_RATIO, ToCoConfig
from toco_ray.data.transforms import denormalize
from toco_ray.losses import DenseEnergyLoss, cls_loss, ctc_loss, ptc_loss, sample_local_crops, seg_loss
from toco_ray.models import build_model
from toco_ray.par import build_par, seg_pseudo_labels

LOSS_TERMS = ("cls", "cls_aux", "ptc", "ctc", "seg", "reg")


@dataclass(frozen=True)
class ActiveTerms:
    """Which loss terms are computed at an iteration: weight non-zero and the schedule has switched them on."""

    cls: bool
    cls_aux: bool
    ptc: bool
    ctc: bool
    seg: bool
    reg: bool

    @property
    def needs_cam(self) -> bool:
        return self.ptc or self.ctc or self.seg or self.reg


def active_terms(cfg: ToCoConfig, iteration: int, ignore_schedule: bool = False) -> ActiveTerms:
    """Applies the loss weights and the schedule (``seg_start_iter``, ``contrast_start_iter``).

    ``ignore_schedule``: every term with a non-zero weight, switched on or not (what the reference computes).
    """
    w, s = cfg.loss, cfg.schedule
    contrast_on = ignore_schedule or iteration >= s.contrast_start_iter
    seg_on = ignore_schedule or iteration >= s.seg_start_iter
    return ActiveTerms(
        cls=w.w_cls > 0,
        cls_aux=w.w_cls_aux > 0,
        ptc=w.w_ptc > 0 and contrast_on,
        ctc=w.w_ctc > 0 and contrast_on,
        seg=w.w_seg > 0 and seg_on,
        reg=w.w_reg > 0 and seg_on,
    )


class ToCoObjective(nn.Module):
    """The ToCo network plus everything needed to turn a batch into its weighted loss terms.

    Args:
        cfg: the experiment config.
        seed: seeds the local-crop sampler (use ``train.seed + rank``).
        reencode: encode the main image again for the teacher, the student and the CAM, as the reference does.
    """

    def __init__(self, cfg: ToCoConfig, seed: int = 0, reencode: bool = False):
        super().__init__()
        self.cfg = cfg
        self.model = build_model(cfg.model)
        self.par = build_par(cfg.par)
        energy_scale = REFERENCE_ENERGY_RATIO if cfg.compat.on("reg_energy_scale") else 1.0
        self.energy = DenseEnergyLoss(
            weight=cfg.loss.reg_weight * energy_scale,
            sigma_rgb=cfg.loss.reg_sigma_rgb,
            sigma_xy=cfg.loss.reg_sigma_xy,
            scale=cfg.loss.reg_scale,
        )
        self.reencode = reencode
        self.generator = torch.Generator().manual_seed(seed)

    def generator_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_generator_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

    def forward(self, batch: dict, iteration: int) -> dict[str, torch.Tensor]:
        """Computes every active loss term and their weighted sum.

        Args:
            batch: "image", "global2", "local_view" (B×3×S×S normalised), "valid_box" (B×4), "label" (B×C).
            iteration: 0-based training iteration (drives the schedule).

        Returns:
            ``{"total": scalar, term: scalar for each computed term}``, all with gradients. With
            ``compat.zero_scheduled_terms`` the terms the schedule has not switched on yet are computed too and
            enter the total ×0, as in the reference: their parameters get zero gradients, so AdamW's state and
            weight decay advance from iteration 0.
        """
        terms = active_terms(self.cfg, iteration)
        if self.cfg.compat.on("zero_scheduled_terms"):
            terms = active_terms(self.cfg, iteration, ignore_schedule=True)
        images, labels, box = batch["image"], batch["label"], batch["valid_box"]
        out = self.model(images, with_seg=terms.seg or terms.reg)
        losses: dict[str, torch.Tensor] = {}
        if terms.cls:
            losses["cls"] = cls_loss(out.logits.float(), labels)
        if terms.cls_aux:
            losses["cls_aux"] = cls_loss(out.aux_logits.float(), labels)
        if terms.needs_cam:
            cam, aux_cam = self.compute_cams(images, out)
            if terms.ptc:
                losses["ptc"] = self.ptc_term(out.patches, aux_cam, labels, box)
            if terms.ctc:
                losses["ctc"] = self.ctc_term(batch, out.cls, aux_cam, labels)
            if terms.seg or terms.reg:
                seg_cam = aux_cam if iteration < self.cfg.schedule.aux_seg_label_until else cam
                losses.update(self.seg_terms(images, out.seg_logits, seg_cam, labels, box, terms))
        losses["total"] = self.weighted_sum(losses, active_terms(self.cfg, iteration))
        return losses

    def compute_cams(self, images: torch.Tensor, out) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-scale CAM and aux CAM (B×C×H×W in [0,1]), reusing this step's scale-1.0 forward."""
        base = None if self.reencode else self.model.cam_maps(out)
        return multiscale_cam(self.model, images, self.cfg.cam.scales, base=base)

    def ptc_term(self, patches, aux_cam, labels, box) -> torch.Tensor:
        cam = self.cfg.cam
        token_labels = cam_to_token_labels(
            aux_cam, labels, box, grid=tuple(patches.shape[-2:]), high=cam.high_thre, low=cam.low_thre,
            scale_box=not self.cfg.compat.on("ptc_box_unscaled"),
        )
        with full_precision(patches.device.type):
            return ptc_loss(patches.float(), token_labels)

    def ctc_term(self, batch, main_cls, aux_cam, labels) -> torch.Tensor:
        cfg = self.cfg
        roi = cam_to_roi(aux_cam, labels, high=cfg.cam.high_thre, low=cfg.cam.low_thre)
        crops, positive_crops = sample_local_crops(
            batch["local_view"], roi, cfg.ctc.n_local_crops, cfg.ctc.local_crop_size, cfg.ctc.neg_thre,
            generator=self.generator,
        )
        b = main_cls.shape[0]
        if self.reencode:
            main_cls = self.model.encode(batch["image"]).cls
        global2_cls = self.model.encode(batch["global2"]).cls
        crop_cls = self.model.encode(crops).cls.reshape(-1, b, main_cls.shape[-1])
        student_in = torch.cat([main_cls[None], global2_cls[None], crop_cls], dim=0)  # V×B×D
        student = self.model.proj_student(student_in.flatten(0, 1)).reshape(student_in.shape[0], b, -1)
        with torch.no_grad():
            if self.reencode:  # the reference encodes both global views again for the teacher
                teacher_in = self.model.encode(torch.cat([batch["image"], batch["global2"]])).cls
            else:
                teacher_in = torch.cat([main_cls, global2_cls]).detach()
            teacher = self.model.proj_teacher(teacher_in).reshape(2, b, -1)
        positive = torch.cat([positive_crops.new_ones(b, 2), positive_crops], dim=1)
        with full_precision(student.device.type):
            return ctc_loss(student.float(), teacher.float(), positive, cfg.ctc.temperature, form=cfg.ctc.form)

    def seg_terms(self, images, seg_logits, cam, labels, box, terms: ActiveTerms) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        images01 = denormalize(images)
        # the energy's lattice coordinates come from a matmul, which bf16 would round by up to a quarter of a
        # lattice cell, and PAR's affinities are exponentials of small differences
        with full_precision(images.device.type):
            with torch.no_grad():
                pseudo = seg_pseudo_labels(
                    self.par, images01, cam, labels, box, cfg.cam.bkg_high, cfg.cam.bkg_low, scale=cfg.par.scale
                )
            logits = F.interpolate(seg_logits.float(), size=pseudo.shape[-2:], mode="bilinear", align_corners=False)
            out = {}
            if terms.seg:
                out["seg"] = seg_loss(logits, pseudo)
            if terms.reg:
                out["reg"] = self.energy(images01 * 255.0, logits.softmax(dim=1), box_mask(box, pseudo.shape), pseudo)
        return out

    def weighted_sum(self, losses: dict[str, torch.Tensor], active: ActiveTerms) -> torch.Tensor:
        """Σ λ·term over ``losses``; a term the schedule has not switched on (``active``) counts ×0."""
        w = self.cfg.loss
        weights = {"cls": w.w_cls, "cls_aux": w.w_cls_aux, "ptc": w.w_ptc, "ctc": w.w_ctc, "seg": w.w_seg,
                   "reg": w.w_reg}
        return sum((weights[name] if getattr(active, name) else 0.0) * value for name, value in losses.items())


def box_mask(box: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """B×H×W float mask, 1 inside each image's valid box [y0, y1, x0, x1)."""
    b, h, w = shape
    ys = torch.arange(h, device=box.device)[None, :, None]
    xs = torch.arange(w, device=box.device)[None, None, :]
    y0, y1, x0, x1 = (box[:, i, None, None] for i in range(4))
    return ((ys >= y0) & (ys < y1) & (xs >= x0) & (xs < x1)).float()


def build_objective(cfg: ToCoConfig, seed: int = 0, reencode: bool = False) -> ToCoObjective:
    """Builds the objective (network, PAR, energy loss) for ``cfg``; ``seed`` drives local-crop sampling."""
    return ToCoObjective(cfg, seed=seed, reencode=reencode)


def unwrap(objective: nn.Module) -> ToCoObjective:
    """The :class:`ToCoObjective` inside a DDP wrapper (or the objective itself)."""
    return objective.module if hasattr(objective, "module") else objective


def train_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batch: dict,
    iteration: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """EMA update, forward, backward, optimiser and scheduler step for one iteration.

    The loss terms stay on the device until the optimiser has stepped; then all of them come to the host in one
    copy, so the step itself never waits for the GPU to catch up.

    Args:
        objective: a :class:`ToCoObjective`, possibly wrapped in DistributedDataParallel.
        batch: tensors already on the objective's device.
        autocast_dtype: ``torch.bfloat16`` for mixed precision (see :func:`autocast_dtype`); None for fp32.

    Returns:
        Float value of every computed loss term, ``total`` and the backbone ``lr`` used for this step.
    """
    inner = unwrap(objective)
    inner.model.ema_update(inner.cfg.ctc.ema_momentum)
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    with autocast(batch["image"].device.type, autocast_dtype):
        losses = objective(batch, iteration)
    losses["total"].backward()
    clip = inner.cfg.train.grad_clip
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(inner.parameters(), clip)
    optimizer.step()
    scheduler.step()
    stats = loss_values(losses)
    stats["lr"] = lr
    return stats


def loss_values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """``{term: scalar tensor}`` → ``{term: float}`` with one device-to-host copy for all terms."""
    names = list(losses)
    values = torch.stack([losses[name].detach().float() for name in names]).tolist()
    return dict(zip(names, values))


def autocast_dtype(setting: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of ``train.autocast`` on ``device``: bf16 on CUDA unless ``off``; None (fp32) on CPU.

    CPU bf16 autocast runs but is slower than fp32 on most CPUs, so CPU training ignores the setting.

    Raises:
        ValueError: ``setting`` is not one of ``CHOICES["train.autocast"]``.
    """
    if setting not in CHOICES["train.autocast"]:
        raise ValueError(f"config key 'train.autocast' expects one of {', '.join(CHOICES['train.autocast'])}, "
                         f"got {setting!r}")
    return torch.bfloat16 if setting == "bf16" and torch.device(device).type == "cuda" else None


def full_precision(device_type: str):
    """Autocast off: under bf16 autocast the network runs in bf16 and every loss term in fp32 from its outputs,
    whose similarity matmuls and exponentials would otherwise keep only bf16's three significant digits."""
    return torch.autocast(device_type, enabled=False)


def autocast(device_type: str, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` on ``device_type``, or a no-op context when ``dtype`` is None."""
    return torch.autocast(device_type=device_type, dtype=dtype) if dtype else contextlib.nullcontext()


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Moves every tensor of a collated batch to ``device`` (names and other values are kept)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
