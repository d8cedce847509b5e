"""Finding a trained network for inference: a checkpoint folder, a training run folder, or an MLflow run.

Accepted references:

* a checkpoint folder (``state.pt`` + ``meta.json``, written by :mod:`toco_ray.checkpointing`);
* a training run folder holding ``checkpoint_*`` folders (the latest one is used);
* an MLflow run id (``runs:/<id>`` or the bare id) of a training run: its ``ray.run_dir`` tag names the run folder.

The config comes from the checkpoint's ``meta.json`` (``config``: the flattened config) or, failing that, from the
``config.yaml`` of the run folder.

Example:
    >>> model, cfg = load_for_inference("outputs/runs/toco-voc-20250101-120000-ab12")  # latest checkpoint
    >>> model, cfg = load_for_inference("runs:/0123456789abcdef0123456789abcdef")
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from torch import nn

from toco_ray.checkpointing import (
    CHECKPOINT_GLOB,
    META_FILE,
    STATE_FILE,
    CheckpointError,
    check_committed,
    intact_checkpoints,
    load_checkpoint,
    read_meta,
)
from toco_ray.config import ConfigError, ToCoConfig, apply_overrides, load_yaml, unflatten
from toco_ray.config_checks import check_config
from toco_ray.models import build_model
from toco_ray.tracking import tagged_path

CONFIG_FILE = "config.yaml"  # the resolved config the launcher saves in the run folder
RUN_DIR_TAG = "ray.run_dir"  # MLflow tag of a training run: its folder in the Ray storage path
MLFLOW_PREFIX = "runs:/"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
DDP_PREFIX = "module."  # DistributedDataParallel wrapper
OBJECTIVE_PREFIX = "model."  # the network inside the training objective


__all__ = ["CheckpointError", "CheckpointInfo", "load_for_inference", "resolve_checkpoint"]


@dataclass
class CheckpointInfo:
    """A resolved checkpoint.

    Attributes:
        folder: the checkpoint folder (``state.pt``).
        meta: its ``meta.json`` (iteration, run name, MLflow run id, config), empty if absent.
        source: the reference it was resolved from (path or MLflow run).
        mlflow_run_id: the training run's MLflow id (from the reference or the meta), or empty.
    """

    folder: Path
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    mlflow_run_id: str = ""

    @property
    def iteration(self) -> int:
        return int(self.meta.get("iteration", -1))


def load_for_inference(
    reference: str, tracking_uri: str = "", map_location: str | torch.device = "cpu"
) -> tuple[nn.Module, ToCoConfig]:
    """Builds the network of a training checkpoint in eval mode.

    Args:
        reference: checkpoint folder, training run folder, or MLflow run id (``runs:/<id>`` or bare).
        tracking_uri: MLflow tracking URI used to resolve a run id.
        map_location: where the weights are loaded.

    Returns:
        ``(model, cfg)``: the :class:`~toco_ray.models.ToCoNet` (eval mode) and the checkpoint's config.

    Raises:
        CheckpointError: nothing usable found; the message names the paths or run tried.
    """
    info = resolve_checkpoint(reference, tracking_uri)
    return load_model(info, map_location)


def load_model(info: CheckpointInfo, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ToCoConfig]:
    """The network and config of a resolved checkpoint (see :func:`load_for_inference`)."""
    cfg = checkpoint_config(info)
    state = load_checkpoint(info.folder, map_location=map_location)
    model = build_inference_model(cfg)
    weights = network_state_dict(state.model)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"checkpoint {info.folder} does not fit the network of its config "
            f"(model.backbone={cfg.model.backbone!r}): {err}"
        ) from None
    return model.eval(), cfg


def build_inference_model(cfg: ToCoConfig) -> nn.Module:
    """The network of ``cfg`` with random weights and no hub download (weights come from a checkpoint)."""
    offline = apply_overrides(cfg, {"model.pretrained": False, "model.pretrained_path": ""})
    return build_model(offline.model)


def network_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """The network's weights from a checkpoint's model state (the training objective's, possibly DDP-wrapped).

    Strips ``module.`` (DDP) and then keeps the ``model.`` entries of the objective (PAR and the energy loss hold
    no trained weights); a plain network state dict is returned unchanged.
    """
    if state and all(k.startswith(DDP_PREFIX) for k in state):
        state = {k[len(DDP_PREFIX) :]: v for k, v in state.items()}
    if any(k.startswith(OBJECTIVE_PREFIX) for k in state):
        state = {k[len(OBJECTIVE_PREFIX) :]: v for k, v in state.items() if k.startswith(OBJECTIVE_PREFIX)}
    return state


def checkpoint_config(info: CheckpointInfo) -> ToCoConfig:
    """The config stored with the checkpoint (meta.json), else the run folder's ``config.yaml``."""
    flat = info.meta.get("config")
    try:
        if isinstance(flat, dict):
            return check_config(unflatten(flat))
        for folder in (info.folder, info.folder.parent):
            if (folder / CONFIG_FILE).is_file():
                return check_config(load_yaml(folder / CONFIG_FILE))
    except ConfigError as err:
        raise CheckpointError(f"checkpoint {info.folder}: its config is invalid: {err}") from None
    raise CheckpointError(
        f"checkpoint {info.folder} has no config: expected 'config' in {META_FILE} or {CONFIG_FILE} in "
        f"{info.folder} or {info.folder.parent}"
    )


# --- resolving a reference ------------------------------------------------------------------------------
def resolve_checkpoint(reference: str, tracking_uri: str = "") -> CheckpointInfo:
    """Turns a path or MLflow run reference into a checkpoint folder (see the module docstring)."""
    path = Path(reference).expanduser()
    if path.exists():
        return _from_path(path, source=reference)
    run_id = _mlflow_run_id(reference)
    if run_id is None:
        raise CheckpointError(
            f"checkpoint {reference!r} does not exist; expected a checkpoint folder, a training run folder "
            f"(with {CHECKPOINT_GLOB}/) or an MLflow run id ({MLFLOW_PREFIX}<32 hex digits>)"
        )
    info = _from_path(_run_dir_of(run_id, tracking_uri), source=reference)
    info.mlflow_run_id = run_id
    return info


def _from_path(path: Path, source: str) -> CheckpointInfo:
    if (path / STATE_FILE).is_file() or (path / META_FILE).is_file():
        problem = check_committed(path)
        if problem:
            raise CheckpointError(problem)
        folder = path
    else:
        folder = latest_checkpoint(path)
    meta = read_meta(folder)
    return CheckpointInfo(folder=folder, meta=meta, source=source, mlflow_run_id=str(meta.get("mlflow_run_id", "")))


def latest_checkpoint(run_dir: Path) -> Path:
    """The committed ``checkpoint_*`` folder of ``run_dir`` with the highest iteration (names are zero-padded);
    incomplete ones are skipped with a warning naming their file."""
    if not run_dir.is_dir():
        raise CheckpointError(f"checkpoint {run_dir} is not a folder; expected a checkpoint or training run folder")
    if not any(run_dir.glob(CHECKPOINT_GLOB)):
        raise CheckpointError(
            f"{run_dir} is neither a checkpoint folder (no {STATE_FILE}) nor a training run folder "
            f"(no {CHECKPOINT_GLOB}/{STATE_FILE})"
        )
    candidates = intact_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(
            f"training run folder {run_dir} has no complete checkpoint: every {CHECKPOINT_GLOB}/ is incomplete or "
            "damaged (see the warnings above)"
        )
    return candidates[0]


def _mlflow_run_id(reference: str) -> str | None:
    text = reference[len(MLFLOW_PREFIX) :] if reference.startswith(MLFLOW_PREFIX) else reference
    text = text.strip("/").split("/")[0]
    return text if _RUN_ID.match(text) else None


def _run_dir_of(run_id: str, tracking_uri: str) -> Path:
    try:
        run = MlflowClient(tracking_uri=tracking_uri or None).get_run(run_id)
    except MlflowException as err:
        store = tracking_uri or "the default store"
        raise CheckpointError(f"MLflow run {run_id} not found at {store}: {err}") from None
    run_dir = run.data.tags.get(RUN_DIR_TAG, "")
    if not run_dir:
        raise CheckpointError(
            f"MLflow run {run_id} has no {RUN_DIR_TAG!r} tag naming its training run folder; pass the folder instead"
        )
    folder = tagged_path(run_dir, tracking_uri or mlflow.get_tracking_uri())  # relative: to the store's folder
    if not folder.is_dir():
        raise CheckpointError(
            f"MLflow run {run_id}: its run folder {folder} (tag {RUN_DIR_TAG!r}) does not exist on this machine"
        )
    return folder
