import math

import pytest
import torch
import torch.nn.functional as F

from toco_ray.config import build_config
from toco_ray.par import PAR, build_par, seg_pseudo_labels

pytestmark = pytest.mark.unit

DILATIONS = (1, 2, 4, 8, 12, 24)


@pytest.fixture
def par() -> PAR:
    return build_par(build_config("voc").par)


def reference_par(images, masks, dilations=DILATIONS, num_iter=10, w1=0.3, w2=0.01):
    """The authors' PAR, transcribed: one-hot 3×3 kernels + dilated conv2d for the neighbours."""
    kernel = torch.zeros(8, 1, 3, 3)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]):
        kernel[i, 0, r, c] = 1

    def neighbours(x):
        b, c, h, w = x.shape
        out = []
        for d in dilations:
            padded = F.pad(x, [d] * 4, mode="replicate").reshape(b * c, 1, h + 2 * d, w + 2 * d)
            out.append(F.conv2d(padded, kernel, dilation=d).view(b, c, -1, h, w))
        return torch.cat(out, dim=2)

    ker = torch.ones(1, 1, 8, 1, 1)
    ker[0, 0, [0, 2, 5, 7]] = math.sqrt(2)
    pos = torch.cat([ker * d for d in dilations], dim=2)
    masks = F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=True)
    b, _, h, w = images.shape
    nbrs = neighbours(images)
    rep = images.unsqueeze(2).repeat(1, 1, nbrs.shape[2], 1, 1)
    pos_rep = pos.repeat(b, 1, 1, h, w)
    aff = -(((nbrs - rep).abs() / (nbrs.std(dim=2, keepdim=True) + 1e-8) / w1) ** 2)
    aff = aff.mean(dim=1, keepdim=True)
    pos_aff = -((pos_rep / (pos_rep.std(dim=2, keepdim=True) + 1e-8) / w1) ** 2)
    aff = F.softmax(aff, dim=2) + w2 * F.softmax(pos_aff, dim=2)
    for _ in range(num_iter):
        masks = (neighbours(masks) * aff).sum(dim=2)
    return masks


def test_matches_the_reference_formulation(par):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 20, 24)
    masks = torch.rand(2, 3, 10, 12).softmax(dim=1)
    torch.testing.assert_close(par(images, masks), reference_par(images, masks), rtol=1e-5, atol=1e-6)


def test_neighbour_distances():
    # dilation 2: the 4 diagonals (offsets 0, 2, 5, 7) at 2·√2, the 4 axial at 2
    s = 2 * math.sqrt(2)
    assert PAR((2,), 1, 0.3, 0.01).distance.tolist() == pytest.approx([s, 2, s, 2, 2, s, 2, s])
    assert build_par(build_config("voc").par).distance.numel() == 48  # 8 neighbours × 6 dilations


def test_affinities_of_a_pixel_sum_to_one_plus_pos_weight(par):
    torch.manual_seed(0)
    aff = par.affinity(torch.rand(1, 3, 12, 16))
    assert aff.shape == (1, 48, 12, 16) and torch.all(aff > 0)
    # softmax sums to 1, the positional softmax to 1 × 0.01
    torch.testing.assert_close(aff.sum(dim=1), torch.full((1, 12, 16), 1.01))


def test_constant_mask_is_a_fixed_point_up_to_the_positional_gain(par):
    torch.manual_seed(0)
    images = torch.rand(1, 3, 12, 16)
    masks = torch.full((1, 2, 12, 16), 0.5)
    # with pos_weight 0 each step is a convex combination of equal values: unchanged
    no_pos = PAR(DILATIONS, num_iter=10, temperature=0.3, pos_weight=0.0)
    torch.testing.assert_close(no_pos(images, masks), masks)
    # with pos_weight 0.01 each step multiplies by 1.01: 0.5 · 1.01^10 = 0.5 · 1.104622… (argmax unaffected)
    torch.testing.assert_close(par(images, masks), torch.full_like(masks, 0.5 * 1.01**10))


def test_two_regions_become_uniform(par):
    # left half black, right half white; the probabilities favour the right class on 70 % of each half
    gen = torch.Generator().manual_seed(0)
    images = torch.zeros(1, 3, 32, 32)
    images[..., 16:] = 1.0
    truth = torch.zeros(32, 32, dtype=torch.long)
    truth[:, 16:] = 1
    flip = torch.rand(32, 32, generator=gen) < 0.3
    noisy = torch.where(flip, 1 - truth, truth)
    assert (noisy != truth).float().mean() > 0.2
    probs = F.one_hot(noisy, 2).permute(2, 0, 1)[None].float() * 0.5 + 0.25  # 0.75 / 0.25
    refined = par(images, probs)
    assert torch.equal(refined.argmax(dim=1)[0], truth)


def test_seg_pseudo_labels_on_three_stripes(par):
    # stripes of 16 columns: A black, B grey, C white; image 16×48 (PAR at 8×24)
    images = torch.zeros(1, 3, 16, 48)
    images[..., 16:32] = 0.5
    images[..., 32:] = 1.0
    cam = torch.zeros(1, 3, 16, 48)
    cam[0, 0, :, :16] = 0.9  # A: class 0 confident
    cam[0, 2, :, 16:32] = 0.5  # B: class 2 between the two background scores
    cam[0, 1, :, 32:] = 1.0  # C: class 1 is absent from the labels, so this must be ignored
    labels = torch.tensor([[1.0, 0.0, 1.0]])
    box = torch.tensor([[0, 16, 0, 44]])
    out = seg_pseudo_labels(par, images, cam, labels, box, bkg_high=0.7, bkg_low=0.25, scale=0.5)
    expected = torch.zeros(1, 16, 48, dtype=torch.long)
    # A: high pass softmax over [bkg 0.7, class0 0.9, class2 0] → class 0 → label 1
    expected[..., :16] = 1
    # B: high pass [0.7, 0, 0.5] → background; low pass [0.25, 0, 0.5] → class 2 → disagree → 255
    expected[..., 16:32] = 255
    # C: [0.7, 0.1·0, 0] and [0.25, 0, 0] → background in both → 0; columns 44.. outside the box → 255
    expected[..., 44:] = 255
    assert torch.equal(out, expected)


def reference_seg_labels(images, cams, cls_labels, high, low, box, down_scale=2, ignore=255):
    """The authors' refine_cams_with_bkg_v2, transcribed (one PAR call per pass and image)."""
    b, _, h, w = images.shape
    small = F.interpolate(images, size=[h // down_scale, w // down_scale], mode="bilinear", align_corners=False)
    cls_labels = torch.cat([torch.ones(b, 1), cls_labels], dim=1)
    out = []
    for bkg in (high, low):
        with_bkg = torch.cat([torch.full((b, 1, h, w), bkg), cams], dim=1)
        with_bkg = F.interpolate(
            with_bkg, size=[h // down_scale, w // down_scale], mode="bilinear", align_corners=False
        )
        label = torch.full((b, h, w), ignore, dtype=torch.long)
        for i, coord in enumerate(box):
            keep = torch.nonzero(cls_labels[i])[:, 0]
            probs = with_bkg[i, keep][None].softmax(dim=1)
            refined = F.interpolate(reference_par(small[[i]], probs), size=(h, w), mode="bilinear", align_corners=False)
            full = keep[refined.argmax(dim=1)]
            label[i, coord[0] : coord[1], coord[2] : coord[3]] = full[0, coord[0] : coord[1], coord[2] : coord[3]]
        out.append(label)
    label_h, label_l = out
    final = label_h.clone()
    final[label_h == 0] = ignore
    final[(label_h + label_l) == 0] = 0
    return final


def test_seg_pseudo_labels_match_the_reference(par):
    torch.manual_seed(5)  # a draw where each image has foreground, background and ignore
    images = torch.rand(2, 3, 24, 32)
    # smooth CAMs (bilinear from 3×4) so all three outcomes occur: foreground, background, ignore
    cams = F.interpolate(torch.rand(2, 4, 3, 4), size=(24, 32), mode="bilinear", align_corners=False)
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    box = torch.tensor([[0, 24, 0, 32], [2, 20, 4, 30]])
    out = seg_pseudo_labels(par, images, cams, labels, box, bkg_high=0.7, bkg_low=0.25)
    expected = reference_seg_labels(images, cams, labels, 0.7, 0.25, box)
    assert [expected[i].unique().tolist() for i in range(2)] == [[0, 1, 3, 255], [0, 2, 255]]
    assert torch.equal(out, expected)
