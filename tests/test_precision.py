"""train.autocast: the config key, the dtype it gives per device, and bf16 autocast keeping the losses in fp32."""

import pytest
import torch

from toco_ray.benchmark import random_batch
from toco_ray.config import ConfigError, apply_overrides, build_config, load_yaml, parse_override
from toco_ray.engine import autocast, autocast_dtype, build_objective

pytestmark = pytest.mark.unit


def test_autocast_defaults_to_bf16_and_takes_off_from_the_command_line_and_yaml(tmp_path):
    assert build_config("voc").train.autocast == "bf16"
    key, value = parse_override("train.autocast=off")  # YAML reads a bare off as False
    assert value is False
    assert build_config("voc", {key: value}).train.autocast == "off"
    (tmp_path / "cfg.yaml").write_text("preset: voc\ntrain:\n  autocast: off\n")
    assert load_yaml(tmp_path / "cfg.yaml").train.autocast == "off"


@pytest.mark.parametrize("bad", ["fp16", "on", True, 1])
def test_bad_autocast_values_name_the_key_and_the_choices(bad):
    with pytest.raises(ConfigError, match=r"'train.autocast'.*bf16, off"):
        build_config("voc", {"train.autocast": bad})


def test_the_retired_amp_bf16_key_of_old_configs_maps_onto_autocast():
    cfg = build_config("voc")
    assert apply_overrides(cfg, {"train.amp_bf16": True}).train.autocast == "bf16"
    assert apply_overrides(cfg, {"train.amp_bf16": False}).train.autocast == "off"


def test_bf16_only_on_cuda():
    assert autocast_dtype("bf16", torch.device("cuda", 0)) is torch.bfloat16
    assert autocast_dtype("bf16", "cpu") is None
    assert autocast_dtype("off", "cuda") is None
    with pytest.raises(ValueError, match="train.autocast"):
        autocast_dtype("fp16", "cuda")


def test_under_bf16_autocast_every_loss_term_is_fp32_and_close_to_the_fp32_one():
    # CPU autocast runs the same bf16 network path as CUDA; the loss terms must come out in fp32.
    cfg = build_config("synthetic", {"schedule.seg_start_iter": 0, "ctc.local_crop_size": 16, "ctc.n_local_crops": 2,
                                     "model.depth": 2, "model.aux_layer": -1, "data.crop_size": 64,
                                     "train.global_batch": 2})
    torch.manual_seed(0)
    objective = build_objective(cfg, seed=0)
    batch = random_batch(cfg, torch.Generator().manual_seed(0))
    state = objective.generator_state()
    with torch.no_grad():
        fp32 = objective(batch, 0)
        objective.set_generator_state(state)
        with autocast("cpu", torch.bfloat16):
            bf16 = objective(batch, 0)
    assert set(bf16) == {"cls", "cls_aux", "ptc", "ctc", "seg", "reg", "total"}
    assert all(v.dtype == torch.float32 for v in bf16.values())
    # bf16 keeps ~3 significant digits in the network; the total moves by well under the 2 % GPU target
    assert abs(bf16["total"] - fp32["total"]) <= 0.02 * abs(fp32["total"])
