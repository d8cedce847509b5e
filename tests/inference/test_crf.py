"""Dense CRF wrapper: shapes, probabilities, the smoothing it is for, and its input checks."""

import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from toco_ray.config import build_config
from toco_ray.crf import CRFParams, dense_crf

pytestmark = pytest.mark.unit

# the paper's parameters: 10 iterations, Gaussian 1/1, bilateral 121/5/4
CFG = CRFParams.final(build_config("voc").eval)


def two_halves(height=40, width=60, flip_fraction=0.1, seed=0):
    """A red left half and a blue right half; noisy probabilities 0.6/0.4 favour the true half, except on a
    random 10 % of pixels where they are swapped."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = (200, 30, 30)
    image[:, width // 2 :] = (30, 30, 200)
    truth = np.zeros((height, width), np.int64)
    truth[:, width // 2 :] = 1
    flipped = np.random.default_rng(seed).random((height, width)) < flip_fraction
    noisy = np.where(flipped, 1 - truth, truth)
    probs = np.where(noisy[None] == np.arange(2)[:, None, None], 0.6, 0.4).astype(np.float32)
    return image, probs, truth


def test_output_is_a_probability_map_of_the_input_shape():
    image, probs, _ = two_halves()
    out = dense_crf(image, probs, CFG)
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-4)


def test_crf_removes_noise_inside_uniform_colour_regions():
    image, probs, truth = two_halves()
    before = (probs.argmax(0) == truth).mean()
    after = (dense_crf(image, probs, CFG).argmax(0) == truth).mean()
    # 10 % of the pixels start wrong; the bilateral term pulls each towards its same-coloured half
    assert before == pytest.approx(0.9, abs=0.02)
    assert after > 0.99


def test_read_only_and_non_contiguous_inputs_are_accepted():
    image, probs, _ = two_halves()
    expected = dense_crf(image, probs, CFG)
    frozen = np.asfortranarray(image)  # not C-contiguous
    frozen.flags.writeable = False  # like a zero-copy array from Ray's object store
    probs_ro = probs.copy()
    probs_ro.flags.writeable = False
    np.testing.assert_array_equal(dense_crf(frozen, probs_ro, CFG), expected)


def test_size_mismatch_names_both_sizes():
    image, probs, _ = two_halves()
    with pytest.raises(ValueError, match=r"image is \(40, 59\).*\(40, 60\)"):
        dense_crf(image[:, :-1], probs, CFG)
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        dense_crf(image.astype(np.float32), probs, CFG)


FREED_BYTES_PROBE = """
import ctypes, sys
import numpy as np
from toco_ray import crf

class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2: ten size_t fields
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert crf.keep_freed_memory()
buffer = np.ones(4 << 20, np.float32)  # 16 MB, the size of one 21-label 500×375 buffer
del buffer
print(libc.mallinfo2().fordblks)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning exists only on glibc")
def test_freed_crf_sized_buffers_stay_in_the_process_once_tuned():
    # glibc's default hands a 16 MB buffer back to the kernel on free (so the next one page-faults in again);
    # tuned, the freed bytes stay in the heap for the next allocation. Fresh interpreters: the tuning is global.
    def freed_bytes(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", FREED_BYTES_PROBE, mode], check=True, capture_output=True,
                             text=True)
        return int(out.stdout)

    assert freed_bytes("default") < 1 << 20
    assert freed_bytes("keep") >= 16 << 20


def test_cam_pseudo_labels_use_their_own_crf_parameters():
    cfg = build_config("voc").eval
    final, cam = CRFParams.final(cfg), CRFParams.cam_labels(cfg)
    # ref infer_seg_voc: Gaussian 1/1, bilateral 121/5/4; ref infer_cam_crf_label: Gaussian 3/3, bilateral 36/3/4
    assert (final.gauss_sxy, final.gauss_compat, final.bi_sxy, final.bi_srgb, final.bi_compat) == (1, 1, 121, 5, 4)
    assert (cam.gauss_sxy, cam.gauss_compat, cam.bi_sxy, cam.bi_srgb, cam.bi_compat) == (3, 3, 36, 3, 4)
    assert final.iters == cam.iters == 10


def test_crf_cam_label_runs_the_cam_crf(monkeypatch):
    from toco_ray import crf
    from toco_ray.inference import predict

    seen = []
    real = crf.dense_crf

    def recording(image, probs, params):
        seen.append(params)
        return real(image, probs, params)

    monkeypatch.setattr(crf, "dense_crf", recording)
    image = np.zeros((8, 8, 3), np.uint8)
    cam = torch.rand(2, 8, 8)
    predict.crf_cam_label(image, cam, torch.tensor([1.0, 0.0]), 0.7, 0.25, build_config("voc").eval)
    assert seen == [CRFParams.cam_labels(build_config("voc").eval)] * 2  # the high and the low pass
