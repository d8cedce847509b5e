import dataclasses
import functools

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from toco_ray.config import build_config
from toco_ray.models import ToCoNet, build_model, ema_update, mean_pairwise_cosine, token_similarity_per_block

pytestmark = pytest.mark.unit


def tiny_cfg(**changes):
    return dataclasses.replace(build_config("synthetic").model, **changes)


@pytest.fixture(scope="module")
def model() -> ToCoNet:
    torch.manual_seed(0)
    return build_model(tiny_cfg()).eval()


@pytest.mark.parametrize(
    ("patch", "size", "grid"),
    [
        (8, (100, 84), (13, 11)),  # ceil(100/8)=13, ceil(84/8)=11
        (8, (37, 53), (5, 7)),  # ceil(37/8)=5, ceil(53/8)=7
        (16, (100, 84), (7, 6)),  # ceil(100/16)=7, ceil(84/16)=6
        (16, (37, 53), (3, 4)),  # ceil(37/16)=3, ceil(53/16)=4
    ],
)
def test_output_shapes_for_sizes_not_multiple_of_the_patch(patch, size, grid):
    torch.manual_seed(0)
    net = build_model(tiny_cfg(patch_size=patch)).eval()
    out = net(torch.randn(2, 3, *size))
    assert out.logits.shape == out.aux_logits.shape == (2, 20)
    assert out.cls.shape == (2, 96)
    assert out.patches.shape == out.aux.shape == (2, 96, *grid)
    assert out.seg_logits.shape == (2, 21, *grid)
    assert out.image_size == size
    cam, aux_cam = net.cam_maps(out)
    assert cam.shape == aux_cam.shape == (2, 20, *grid)
    assert net.to_pixels(cam, out.image_size).shape == (2, 20, *size)
    assert net(torch.randn(1, 3, *size), with_seg=False).seg_logits is None


def test_input_is_zero_padded_at_the_bottom_right(model):
    x = torch.randn(1, 3, 37, 53)
    padded = F.pad(x, (0, 56 - 53, 0, 40 - 37))  # next multiples of 8: 40×56
    a, b = model.encode(x), model.encode(padded)
    torch.testing.assert_close(a.patches, b.patches)
    torch.testing.assert_close(a.aux, b.aux)


def test_tokens_match_timm(model, monkeypatch):
    # Independent path: timm's own forward_features / forward_intermediates on the padded input, with its
    # position-embedding resize made plain bicubic (timm antialiases; the reference and we do not).
    plain = functools.partial(timm.layers.resample_abs_pos_embed, antialias=False)
    monkeypatch.setattr(timm.models.vision_transformer, "resample_abs_pos_embed", plain)
    x = F.pad(torch.randn(2, 3, 37, 53), (0, 3, 0, 3))  # 40×56 → grid 5×7
    tokens = model.encode(x)
    vit = model.backbone
    final = vit.forward_features(x)  # B×(1+35)×D after the final norm
    torch.testing.assert_close(tokens.cls, final[:, 0])
    torch.testing.assert_close(tokens.patches, final[:, 1:].transpose(1, 2).reshape(2, 96, 5, 7))
    # aux_layer −2 of 4 blocks = block index 2, raw (norm=False), prefix tokens dropped
    (raw,) = vit.forward_intermediates(x, indices=[2], norm=False, output_fmt="NCHW", intermediates_only=True)
    torch.testing.assert_close(tokens.aux, raw)
    assert not torch.allclose(tokens.aux, tokens.patches)


def test_negative_and_positive_aux_layer_agree():
    x = torch.randn(1, 3, 32, 40)
    outs = []
    for layer in (-2, 2):  # depth 4: −2 ≡ 2
        torch.manual_seed(0)
        outs.append(build_model(tiny_cfg(aux_layer=layer)).eval().encode(x).aux)
    assert torch.equal(outs[0], outs[1])
    with pytest.raises(ValueError, match="model.aux_layer=4"):
        build_model(tiny_cfg(aux_layer=4))


def test_return_blocks_gives_every_raw_block_output(model):
    tokens = model.encode(torch.randn(1, 3, 32, 32), return_blocks=True)
    assert len(tokens.blocks) == 4 and tokens.blocks[0].shape == (1, 96, 4, 4)
    assert torch.equal(tokens.blocks[2], tokens.aux)
    assert model.encode(torch.randn(1, 3, 32, 32)).blocks is None


def test_classify_is_global_max_pool_then_1x1_conv(model):
    tokens = model.encode(torch.randn(2, 3, 32, 32))
    logits, aux_logits = model.classify(tokens)
    w = model.classifier.weight[:, :, 0, 0]  # C×D
    torch.testing.assert_close(logits, tokens.patches.amax(dim=(-2, -1)) @ w.T)
    w_aux = model.aux_classifier.weight[:, :, 0, 0]
    torch.testing.assert_close(aux_logits, tokens.aux.amax(dim=(-2, -1)) @ w_aux.T)
    assert model.classifier.bias is None and model.aux_classifier.bias is None


def test_cam_maps_are_the_classifier_applied_per_token_without_grad():
    torch.manual_seed(0)
    net = build_model(tiny_cfg())
    out = net(torch.randn(1, 3, 32, 32))
    cam, aux_cam = net.cam_maps(out)
    assert not cam.requires_grad and not aux_cam.requires_grad
    w = net.classifier.weight[:, :, 0, 0]
    torch.testing.assert_close(cam, torch.einsum("cd,bdhw->bchw", w, out.patches).detach())


def test_decoder_is_largefov():
    net = build_model(tiny_cfg())
    convs = [m for m in net.decoder.modules() if isinstance(m, nn.Conv2d)]
    # synthetic preset: 96 → 64 → 64 → 21, dilation 5 with padding 5 keeps the grid
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.dilation, c.padding) for c in convs] == [
        (96, 64, (3, 3), (5, 5), (5, 5)),
        (64, 64, (3, 3), (5, 5), (5, 5)),
        (64, 21, (1, 1), (1, 1), (0, 0)),
    ]
    assert sum(isinstance(m, nn.ReLU) for m in net.decoder.modules()) == 2


def test_param_groups_cover_every_trainable_parameter_once():
    net = build_model(tiny_cfg())
    groups = net.param_groups()
    grouped = [id(p) for ps in groups.values() for p in ps]
    assert len(grouped) == len(set(grouped))
    trainable = {id(p) for p in net.parameters() if p.requires_grad}
    assert set(grouped) == trainable
    excluded = {id(p) for p in net.proj_teacher.parameters()}
    excluded |= {id(net.backbone.pos_embed), id(net.proj_student.last_layer.parametrizations.weight.original0)}
    assert not excluded & set(grouped)
    heads = [net.classifier, net.aux_classifier, net.decoder, net.proj_student]
    assert {id(p) for p in groups["head"]} == {id(p) for m in heads for p in m.parameters() if p.requires_grad}


def test_ema_update_on_two_parameters():
    teacher, student = nn.Linear(1, 1), nn.Linear(1, 1)  # weight and bias
    with torch.no_grad():
        for p in teacher.parameters():
            p.fill_(1.0)
        for p in student.parameters():
            p.fill_(3.0)
    ema_update(teacher, student, momentum=0.9)
    for p in teacher.parameters():  # 0.9·1 + 0.1·3 = 1.2
        assert p.item() == pytest.approx(1.2)
    ema_update(teacher, student, momentum=0.0)
    for p in teacher.parameters():  # 0·1.2 + 1·3 = 3, an exact copy
        assert p.item() == 3.0
    for p in student.parameters():
        assert p.item() == 3.0


def test_teacher_is_a_frozen_copy_that_follows_the_student():
    net = build_model(tiny_cfg())
    student, teacher = net.proj_student, net.proj_teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    for s, t in zip(student.parameters(), teacher.parameters()):
        assert torch.equal(s, t) and s is not t
    with torch.no_grad():
        student.mlp[0].weight.add_(1.0)
    before = teacher.mlp[0].weight.clone()
    net.ema_update(0.9)
    torch.testing.assert_close(teacher.mlp[0].weight, 0.9 * before + 0.1 * student.mlp[0].weight)


def test_projection_gain_is_fixed_at_one_and_not_trained():
    torch.manual_seed(0)
    net = build_model(tiny_cfg())
    head = net.proj_student
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.shape == (128, 1) and torch.all(gain == 1) and not gain.requires_grad
    # the effective weight has unit-norm rows: outputs are cosines, so |output| ≤ 1
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(128))
    x = torch.randn(5, 96)
    assert head(x).shape == (5, 128) and head(x).abs().max() <= 1 + 1e-6
    opt = torch.optim.SGD([p for ps in net.param_groups().values() for p in ps], lr=1.0)
    head(x).sum().backward()
    opt.step()
    assert torch.all(gain == 1)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(128))


def test_mean_pairwise_cosine_by_hand():
    # tokens a=(1,0), b=(0,1), c=(2,0) on a 1×3 grid: cos(a,b)=0, cos(a,c)=1, cos(b,c)=0 → mean (0+1+0)/3
    tokens = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]).reshape(1, 2, 1, 3)
    assert mean_pairwise_cosine(tokens) == pytest.approx(1 / 3)
    assert mean_pairwise_cosine(torch.ones(2, 5, 2, 2)) == pytest.approx(1.0)


def test_token_similarity_per_block(model):
    sims = token_similarity_per_block(model, torch.randn(2, 3, 32, 32))
    assert len(sims) == 4 and all(-1.0 <= s <= 1.0 for s in sims)
