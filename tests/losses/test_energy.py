import math

import pytest
import torch

from toco_ray.config import LossConfig
from toco_ray.losses import (
    DenseEnergyLoss,
    PermutohedralLattice,
    energy_gate,
    gaussian_filter_exact,
    pixel_features,
)
from toco_ray.losses.permutohedral import _blur, _slice, _splat

try:
    import numba  # noqa: F401

    AVAILABLE = ("torch", "numba")
except ImportError:  # the compiled backend is optional
    AVAILABLE = ("torch",)
BACKEND_NAMES = ("torch", "numba")
BACKENDS = [b if b in AVAILABLE else pytest.param(b, marks=pytest.mark.skip(reason=f"{b} is not installed"))
            for b in BACKEND_NAMES]

pytestmark = pytest.mark.unit


def _two_pixels():
    """A 1×2 image of one colour, P = (0.8, 0.2) and (0.4, 0.6); pixel 0 labelled, pixel 1 unlabelled."""
    images = torch.full((1, 3, 1, 2), 100.0)
    probs = torch.tensor([[0.8, 0.4], [0.2, 0.6]], dtype=torch.float64).view(1, 2, 1, 2)
    roi = torch.ones(1, 1, 2)
    labels = torch.tensor([[[0, 255]]])
    return images, probs, roi, labels


def test_energy_gate():
    probs = torch.tensor([[0.9, 0.6, 0.3], [0.1, 0.4, 0.7]]).view(1, 2, 1, 3)  # max_k: 0.9, 0.6, 0.7
    roi = torch.tensor([[[1.0, 1.0, 0.0]]])
    unlabelled = torch.tensor([[[False, True, False]]])
    # 1 − 0.9 = 0.1; unlabelled → 1; outside the box 0 − 0.7 < 0 → 0
    torch.testing.assert_close(energy_gate(probs, roi, unlabelled), torch.tensor([[[0.1, 1.0, 0.0]]]))


def test_pixel_features():
    image = torch.arange(12, dtype=torch.float64).view(1, 3, 2, 2) * 10
    features = pixel_features(image, sigma_xy=2.0, sigma_rgb=10.0)
    # pixel (y=1, x=0) is the 3rd in row-major order: (0/2, 1/2, 20/10, 60/10, 100/10)
    assert features.shape == (1, 4, 5)
    torch.testing.assert_close(features[0, 2], torch.tensor([0.0, 0.5, 2.0, 6.0, 10.0], dtype=torch.float64))


def test_energy_by_hand():
    loss_fn = DenseEnergyLoss(weight=1.0, sigma_rgb=15.0, sigma_xy=1.0, scale=1.0, kernel="exact")
    # same colour, 1 pixel apart with σxy = 1 → k01 = e = exp(−½); gate = (1 − 0.8, 1) = (0.2, 1)
    # K(P)_0 = (0.8 + 0.4e, 0.2 + 0.6e), K(P)_1 = (0.4 + 0.8e, 0.6 + 0.2e)
    # Σ P·gate·K(P) = 0.8·0.2·(0.8+0.4e) + 0.2·0.2·(0.2+0.6e) + 0.4·(0.4+0.8e) + 0.6·(0.6+0.2e)
    #              = 0.656 + 0.528e = 0.976248;  loss = −1·0.976248 / B(=1)
    expected = -(0.656 + 0.528 * math.exp(-0.5))
    assert loss_fn(*_two_pixels()).item() == pytest.approx(expected)
    loss_fn.weight = 3e-7  # the weight scales the loss linearly
    assert loss_fn(*_two_pixels()).item() == pytest.approx(3e-7 * expected)


def test_energy_is_averaged_over_the_batch():
    loss_fn = DenseEnergyLoss(weight=1.0, sigma_xy=1.0, scale=1.0, kernel="exact")
    single = loss_fn(*_two_pixels())
    doubled = loss_fn(*(torch.cat([t, t]) for t in _two_pixels()))
    assert doubled.item() == pytest.approx(single.item())


def test_pixels_outside_the_box_do_not_count():
    loss_fn = DenseEnergyLoss(weight=1.0, sigma_xy=1.0, scale=1.0, kernel="exact")
    images, probs, _, labels = _two_pixels()
    roi = torch.tensor([[[1.0, 0.0]]])  # pixel 1 outside the box: P zeroed there (its gate is 1, unlabelled)
    # only pixel 0: P·gate·K(P) = 0.8·0.2·0.8 + 0.2·0.2·0.2 = 0.128 + 0.008 = 0.136
    assert loss_fn(images, probs, roi, labels).item() == pytest.approx(-0.136)
    other = probs.clone()
    other[0, :, 0, 1] = torch.tensor([0.1, 0.9], dtype=torch.float64)
    assert loss_fn(images, other, roi, labels).item() == pytest.approx(-0.136)


def _random_inputs(seed, b=1, k=3, h=8, w=10, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, h, w, generator=g) * 255
    probs = torch.randn(b, k, h, w, generator=g, dtype=dtype).softmax(dim=1)
    roi = torch.zeros(b, h, w)
    roi[:, 1:, : w - 2] = 1
    labels = torch.randint(0, k, (b, h, w), generator=g)
    labels[:, ::3] = 255
    return images, probs, roi, labels


def test_gradient_holds_the_gate_constant():
    images, probs, roi, labels = _random_inputs(0, b=2)
    loss_fn = DenseEnergyLoss(weight=0.5, sigma_xy=4.0, scale=1.0, kernel="exact")
    probs.requires_grad_(True)
    loss_fn(images, probs, roi, labels).backward()
    # d/dP of −w·Σ P̃·gate·K(P̃)/B with P̃ = P⊙roi and gate constant: −w·roi⊙(gate⊙K(P̃) + K(gate⊙P̃))/B
    b, k, h, w = probs.shape
    gate = energy_gate(probs, roi, labels == 255).reshape(b, h * w, 1).double()
    masked = (probs * roi.unsqueeze(1)).detach().flatten(2).transpose(1, 2)
    features = pixel_features(images.double(), 4.0, 15.0)
    expected = []
    for i in range(b):
        grad = gate[i] * gaussian_filter_exact(features[i], masked[i])
        grad = grad + gaussian_filter_exact(features[i], gate[i] * masked[i])
        expected.append(-0.5 * grad / b)
    expected = torch.stack(expected).transpose(1, 2).reshape(b, k, h, w) * roi.unsqueeze(1)
    torch.testing.assert_close(probs.grad, expected)


@pytest.mark.parametrize(("kernel", "backend"), [("exact", "auto"), *(("permutohedral", b) for b in BACKEND_NAMES)])
def test_energy_gradcheck(kernel, backend):
    if kernel == "permutohedral" and backend not in AVAILABLE:
        pytest.skip(f"the {backend} backend is not installed")
    images, probs, roi, _ = _random_inputs(1, k=2, h=6, w=8)
    labels = torch.full(roi.shape, 255)  # gate ≡ 1, so the gate-constant gradient is the true gradient
    loss_fn = DenseEnergyLoss(weight=1e-2, sigma_xy=8.0, scale=0.5, kernel=kernel, backend=backend)
    probs.requires_grad_(True)
    # fast mode (a random directional derivative) keeps the lattice rebuilds per check to a handful
    assert torch.autograd.gradcheck(lambda p: loss_fn(images, p, roi, labels), (probs,), fast_mode=True)


def _previous_energy(loss_fn, images_255, probs, roi_mask, seg_label):
    """The energy as it was computed before its fused forward/backward: autograd through the pure-PyTorch
    lattice's splat, blur and slice, the lattice filtering P alone."""
    images, probs, roi, unlabelled = loss_fn._downscale(images_255, probs, roi_mask, seg_label)
    gate = energy_gate(probs, roi, unlabelled)
    probs = probs * roi.unsqueeze(1)
    b, k, h, w = probs.shape
    features = pixel_features(images, loss_fn.sigma_xy * loss_fn.scale, loss_fn.sigma_rgb)
    values = probs.flatten(2).transpose(1, 2)
    lattice = PermutohedralLattice(features.to(values.dtype), backend="torch")
    flat = values.reshape(b * h * w, k)
    weights = lattice.barycentric.to(flat.dtype)
    splatted = _splat(flat, weights, lattice.vertex_index, lattice.num_lattice_points)
    filtered = _slice(_blur(splatted, lattice.neighbours), weights, lattice.vertex_index) * lattice.gain
    energy = (values * gate.reshape(b, h * w, 1) * filtered.reshape(values.shape)).sum()
    return -loss_fn.weight * energy / b


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("k", [2, 21, 81])
@pytest.mark.parametrize(("h", "w"), [(12, 16), (32, 40), (64, 88)])
def test_energy_matches_previous_implementation(backend, k, h, w):
    # Noise images (a sparse, large lattice) at the three sizes, with unlabelled rows and a partial box.
    images, probs, roi, labels = _random_inputs(3, b=2, k=k, h=h, w=w, dtype=torch.float32)
    loss_fn = DenseEnergyLoss(weight=1.0, backend=backend)
    grads = []
    for energy_fn in (loss_fn, lambda *a: _previous_energy(loss_fn, *a)):
        p = probs.clone().requires_grad_(True)
        loss = energy_fn(images, p, roi, labels)
        loss.backward()
        grads.append((loss.detach(), p.grad))
    (fast, fast_grad), (previous, previous_grad) = grads
    torch.testing.assert_close(fast, previous, rtol=1e-5, atol=0)
    torch.testing.assert_close(fast_grad, previous_grad, rtol=1e-4, atol=1e-5 * previous_grad.abs().max().item())


def test_energy_without_gradient_filters_once():
    images, probs, roi, labels = _random_inputs(4, k=3, h=16, w=16)
    loss_fn = DenseEnergyLoss(weight=1.0)
    with torch.no_grad():
        value = loss_fn(images, probs, roi, labels)
    torch.testing.assert_close(value, _previous_energy(loss_fn, images, probs, roi, labels))


def test_permutohedral_energy_close_to_exact():
    images, probs, roi, labels = _random_inputs(2, b=2, k=4, h=48, w=64)
    images = torch.nn.functional.avg_pool2d(images, 5, 1, 2)  # photo-like local smoothness
    exact = DenseEnergyLoss(kernel="exact")(images, probs, roi, labels)
    fast = DenseEnergyLoss(kernel="permutohedral")(images, probs, roi, labels)
    # same 8 % tolerance as tests/losses/test_permutohedral.py (measured ≤ 5 %)
    assert abs(fast.item() / exact.item() - 1) < 0.08


def test_from_config_and_unknown_kernel():
    loss_fn = DenseEnergyLoss.from_config(LossConfig())
    assert (loss_fn.weight, loss_fn.sigma_rgb, loss_fn.sigma_xy, loss_fn.scale) == (1e-7, 15.0, 100.0, 0.5)
    with pytest.raises(ValueError, match="kernel"):
        DenseEnergyLoss(kernel="bilateral_grid")


def test_the_lattice_runs_eagerly_under_torch_compile():
    # The lattice is built from data (unique codes, searched hashes): traced, it would be specialised at every step,
    # and inductor's CUDA code once failed to build its int64 strides. The compiled loss must match the eager one
    # and no captured graph may hold the lattice's search.
    torch.manual_seed(0)
    images = torch.rand(2, 3, 12, 10) * 255
    probs = torch.rand(2, 3, 12, 10).softmax(1)
    roi, labels = torch.ones(2, 12, 10), torch.randint(0, 3, (2, 12, 10))
    loss_fn = DenseEnergyLoss(weight=1.0, scale=1.0, backend="torch")
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    compiled = torch.compile(loss_fn, backend=recording_backend)
    torch.testing.assert_close(compiled(images, probs, roi, labels), loss_fn(images, probs, roi, labels))
    assert graphs, "nothing was compiled"
    assert not any("searchsorted" in code or "unique" in code for code in graphs)
