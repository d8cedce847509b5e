import pytest

from toco_ray.config import (
    PRESETS,
    ConfigError,
    build_config,
    flatten,
    load_yaml,
    parse_override,
    save_yaml,
    unflatten,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_flatten_and_yaml_round_trip(preset, tmp_path):
    cfg = build_config(preset, {"loss.w_ptc": 0.3, "cam.scales": [1.0, 0.75]})
    assert unflatten(flatten(cfg)) == cfg
    assert load_yaml(save_yaml(cfg, tmp_path / "cfg.yaml")) == cfg


def test_paper_values_in_presets():
    voc, coco = build_config("voc"), build_config("coco")
    assert (voc.cam.low_thre, voc.cam.high_thre, coco.cam.high_thre) == (0.25, 0.7, 0.65)
    assert (voc.loss.w_ptc, voc.loss.w_ctc, voc.loss.w_seg, voc.loss.w_reg) == (0.2, 0.5, 0.1, 0.05)
    assert (voc.ctc.local_crop_size, voc.ctc.ema_momentum, voc.ctc.temperature) == (96, 0.9, 0.5)
    assert (voc.train.global_batch, voc.schedule.max_iters, voc.data.crop_size) == (4, 20000, 448)
    assert (coco.train.global_batch, coco.schedule.max_iters, coco.model.num_classes) == (8, 80000, 80)
    assert flatten(voc)["optim.lr"] == 6e-5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"loss.wptc": 0.1}, "unknown config key 'loss.wptc' (did you mean 'loss.w_ptc'?)"),
        ({"loss.w_ptc": "high"}, "'loss.w_ptc' expects float"),
        ({"model.depth": 2.5}, "'model.depth' expects int"),
        ({"model.pretrained": 1}, "'model.pretrained' expects bool"),
        ({"cam.scales": []}, "'cam.scales' expects a non-empty list"),
        ({"optim.betas": [0.9]}, "'optim.betas' expects a list of 2 values"),
    ],
)
def test_bad_keys_and_types_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        build_config("voc", overrides)
    assert message in str(err.value)


def test_int_is_accepted_for_float_and_unknown_preset_fails():
    assert build_config("voc", {"loss.w_ctc": 1}).loss.w_ctc == 1.0
    with pytest.raises(ConfigError, match="unknown preset 'vocc'"):
        build_config("vocc")


def test_yaml_with_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("preset: voc\nloss:\n  w_ptcc: 0.3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'loss.w_ptcc'"):
        load_yaml(path)


def test_parse_override_reads_yaml_values():
    assert parse_override("loss.w_ptc=0.3") == ("loss.w_ptc", 0.3)
    assert parse_override("cam.scales=[1, 0.5]") == ("cam.scales", [1, 0.5])
    assert parse_override("model.backbone=vit_base_patch16_224") == ("model.backbone", "vit_base_patch16_224")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("loss.w_ptc")


def test_coco_preset_follows_the_reference_coco_script():
    cfg = build_config("coco")
    # ref dist_train_coco_seg_neg.py: high_thre 0.65 (PTC and the seg labels' high background), bkg_thre 0.45
    assert (cfg.cam.high_thre, cfg.cam.bkg_high, cfg.cam.bkg_low, cfg.cam.eval_bkg) == (0.65, 0.65, 0.25, 0.45)
    assert cfg.ctc.temperature == 1.0  # the script's CTC_loss temp (paper and log: 0.5)
    assert cfg.eval.protocol == "coco" and build_config("voc").eval.protocol == "voc"


def test_compat_section_defaults_off_and_reference_is_a_key():
    cfg = build_config("voc", {"compat.reference": True})
    assert flatten(cfg)["compat.reference"] is True
    assert not build_config("voc").compat.reference
    with pytest.raises(ConfigError, match="unknown config key 'compat.nan_seg_loss'"):
        build_config("voc", {"compat.nan_seg_loss": True})
