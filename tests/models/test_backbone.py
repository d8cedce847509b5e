import dataclasses
import hashlib
import warnings

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import resample_abs_pos_embed

from toco_ray.config import ConfigError, build_config
from toco_ray.models import ToCoNet, build_backbone, check_backbone_name, resize_pos_embed, weights_tags

pytestmark = pytest.mark.unit


def tiny_cfg(**changes):
    return dataclasses.replace(build_config("synthetic").model, **changes)


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_overrides_build_the_tiny_vit_and_freeze_pos_embed():
    vit = build_backbone(tiny_cfg())
    # synthetic preset: vit_tiny with depth 4, width 96, 3 heads, 8-pixel patches, no head
    assert len(vit.blocks) == 4 and vit.embed_dim == 96 and vit.blocks[0].attn.num_heads == 3
    assert vit.patch_embed.patch_size == (8, 8)
    assert vit.num_classes == 0
    assert not vit.pos_embed.requires_grad
    assert build_backbone(tiny_cfg(freeze_pos_embed=False)).pos_embed.requires_grad


@pytest.mark.parametrize("nest", [None, "model", "state_dict"])
def test_pretrained_path_round_trips_a_state_dict(tmp_path, nest):
    torch.manual_seed(0)
    source = build_backbone(tiny_cfg())
    state = source.state_dict()
    path = tmp_path / "vit.pth"
    torch.save(state if nest is None else {nest: state}, path)
    torch.manual_seed(1)  # different random init, so equality can only come from the file
    loaded = build_backbone(tiny_cfg(pretrained=True, pretrained_path=str(path)))
    assert_same_weights(source, loaded)


def test_pretrained_path_reads_safetensors_and_ignores_the_imagenet_head(tmp_path):
    torch.manual_seed(0)
    source = build_backbone(tiny_cfg())
    state = dict(source.state_dict())
    state["head.weight"] = torch.zeros(1000, 96)  # a classifier checkpoint; our backbone has no head
    state["head.bias"] = torch.zeros(1000)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # head keys must not even warn
        loaded = build_backbone(tiny_cfg(pretrained_path=str(path)))
    assert_same_weights(source, loaded)


def test_pretrained_path_resizes_pos_embed_to_the_model_grid(tmp_path):
    # Weights trained at 112 px: grid 112/8 = 14 → 1 + 14·14 = 197 positions; our model is built at 224 → 28×28.
    torch.manual_seed(0)
    small = timm.create_model(
        "vit_tiny_patch16_224", img_size=112, depth=4, embed_dim=96, num_heads=3, patch_size=8, num_classes=0
    )
    assert small.pos_embed.shape == (1, 197, 96)
    path = tmp_path / "vit112.pth"
    torch.save(small.state_dict(), path)
    loaded = build_backbone(tiny_cfg(pretrained_path=str(path)))
    expected = resample_abs_pos_embed(small.pos_embed.detach(), new_size=(28, 28), num_prefix_tokens=1)
    assert loaded.pos_embed.shape == (1, 785, 96)
    torch.testing.assert_close(loaded.pos_embed.detach(), expected)
    assert torch.equal(loaded.blocks[2].mlp.fc1.weight, small.blocks[2].mlp.fc1.weight)


def test_missing_weight_file_is_named():
    with pytest.raises(FileNotFoundError, match="/no/such/weights.pth"):
        build_backbone(tiny_cfg(pretrained_path="/no/such/weights.pth"))


def test_missing_and_unexpected_keys_are_reported(tmp_path):
    state = dict(build_backbone(tiny_cfg()).state_dict())
    del state["blocks.3.mlp.fc2.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"partial\.pth.*blocks\.3\.mlp\.fc2\.bias"):
        build_backbone(tiny_cfg(pretrained_path=str(path)))

    state = dict(build_backbone(tiny_cfg()).state_dict())
    state["decoder.extra"] = torch.zeros(3)
    torch.save(state, path)
    with pytest.warns(UserWarning, match=r"decoder\.extra"):
        build_backbone(tiny_cfg(pretrained_path=str(path)))


def test_wrongly_shaped_weights_name_the_file(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(build_backbone(tiny_cfg(embed_dim=192)).state_dict(), path)
    with pytest.raises(ValueError, match=r"wide\.pth"):
        build_backbone(tiny_cfg(pretrained_path=str(path)))


def _patch16_vit():
    return build_backbone(tiny_cfg(patch_size=16))  # stored position grid 14×14


@pytest.mark.parametrize("grid", [(28, 28), (6, 6), (23, 31)])
def test_pos_embed_is_resized_with_plain_bicubic(grid):
    vit = _patch16_vit()
    torch.nn.init.normal_(vit.pos_embed)  # a rough embedding, where the kernels differ most
    cls_pos, grid_pos = vit.pos_embed[:, :1], vit.pos_embed[:, 1:]
    square = grid_pos.reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(square, size=grid, mode="bicubic", align_corners=False)
    expected = torch.cat([cls_pos, expected.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)], dim=1)
    assert torch.equal(resize_pos_embed(vit, grid), expected)
    # timm's own dynamic-size path antialiases: another kernel (a = −0.5, area filter when downsampling)
    antialiased = resample_abs_pos_embed(vit.pos_embed, new_size=list(grid), old_size=[14, 14])
    assert (antialiased - expected).abs().max() > 1e-2


def test_encode_adds_the_plain_bicubic_pos_embed_to_every_input_size():
    torch.manual_seed(0)
    model = ToCoNet(tiny_cfg(patch_size=16))
    vit = model.backbone
    torch.nn.init.normal_(vit.pos_embed)
    seen = []
    vit.norm_pre.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    images = torch.randn(1, 3, 96, 96)  # a local crop: 6×6 tokens
    model.encode(images)
    patches = vit.patch_embed(images).reshape(1, 36, -1)
    expected = torch.cat([vit.cls_token, patches], dim=1) + resize_pos_embed(vit, (6, 6))
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-6)


def test_decoder_has_no_bias_and_pytorch_default_init():
    torch.manual_seed(0)
    decoder = ToCoNet(tiny_cfg()).decoder
    assert not [name for name, _ in decoder.named_parameters() if name.endswith("bias")]
    for conv in (m for m in decoder.modules() if isinstance(m, torch.nn.Conv2d)):
        fan_in = conv.weight[0].numel()
        # PyTorch's default, kaiming_uniform(a=√5), is uniform in ±1/√fan_in (Kaiming-normal fan-out overshoots it)
        assert conv.weight.abs().max() <= 1 / fan_in**0.5
        assert conv.weight.abs().max() > 0.9 / fan_in**0.5


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("vit_base_patch16_224.no_such_tag", "timm has no tag 'no_such_tag' for vit_base_patch16_224"),
        ("vit_bass_patch16_224", "timm has no model 'vit_bass_patch16_224'"),
    ],
)
def test_an_unknown_backbone_or_tag_fails_naming_the_key(name, fragment):
    with pytest.raises(ConfigError, match="config key 'model.backbone'") as err:
        check_backbone_name(name)
    assert fragment in str(err.value)
    check_backbone_name("vit_base_patch16_224.orig_in21k_ft_in1k")  # the ViT-B† weights resolve


def test_the_vit_b_dagger_preset_names_the_original_jax_weights():
    assert build_config("voc_vitb21k").model.backbone == "vit_base_patch16_224.orig_in21k_ft_in1k"


def test_weights_tags_record_the_file_and_its_sha256(tmp_path):
    source = build_backbone(tiny_cfg())
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone(tiny_cfg(pretrained=True, pretrained_path=str(path)))
    tags = weights_tags(loaded)
    assert tags["weights.source"] == "file" and tags["weights.file"] == str(path.resolve())
    assert tags["weights.sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_tags(source)["weights.source"] == "random init"
