import math

import numpy as np
import pytest
import torch

from toco_ray.cam import multiscale_cam
from toco_ray.config import build_config
from toco_ray.evaluation import (
    EvalCounts,
    Predictions,
    baseline_predictions,
    count_batch,
    eval_metrics,
    evaluate,
    predict,
    summarize,
)
from toco_ray.models import build_model
from toco_ray.visualize import (
    cam_overlay_figure,
    confusion_figure,
    iou_table,
    oversmoothing_figure,
)

pytestmark = pytest.mark.unit
C = 3  # foreground classes in the hand-made cases (K = 4 with background)


def test_baselines_all_background_and_image_majority():
    mask = torch.tensor([[0, 2, 2], [2, 255, 1]])
    base = baseline_predictions(mask)
    assert base["all_background"].tolist() == [[0, 0, 0], [0, 0, 0]]
    # valid pixels: 0 ×1, 1 ×1, 2 ×3 → class 2 covers most of the image, and is its largest foreground class
    assert base["image_majority"].tolist() == [[2, 2, 2], [2, 2, 2]]
    assert base["image_largest_foreground"].tolist() == [[2, 2, 2], [2, 2, 2]]
    mostly_background = baseline_predictions(torch.tensor([[0, 0, 0], [3, 1, 3]]))
    assert mostly_background["image_majority"].unique().tolist() == [0]
    assert mostly_background["image_largest_foreground"].unique().tolist() == [3]  # 3 ×2 beats 1 ×1
    assert baseline_predictions(torch.zeros(2, 2, dtype=torch.long))["image_largest_foreground"].sum() == 0


def test_counts_compare_each_prediction_with_the_native_mask():
    mask = torch.tensor([[0, 1], [1, 255]])
    preds = Predictions(
        cam=[torch.tensor([[0, 1], [0, 3]])],
        aux_cam=[torch.zeros(2, 2, dtype=torch.long)],
        seg=[torch.tensor([[0, 1], [1, 1]])],
        cams=torch.empty(0),
        aux_cams=torch.empty(0),
    )
    counts = EvalCounts.zeros(C)
    count_batch(counts, preds, [mask])
    cam = counts.matrices["cam"]
    # valid pixels (gt, pred): (0,0), (1,1), (1,0); the void pixel is skipped
    assert cam[0, 0] == 1 and cam[1, 1] == 1 and cam[1, 0] == 1 and cam.sum() == 3
    assert counts.matrices["seg"].trace() == 3 and counts.num_images == 1
    results = summarize(counts)
    # CAM IoU: background TP 1 / (1 + FP 1) = 0.5, class 1 TP 1 / (1 + FN 1) = 0.5 → mIoU 0.5
    assert results["cam"].miou == pytest.approx(0.5)
    assert results["seg"].miou == pytest.approx(1.0)
    # majority baseline: class 1 (2 of 3 valid pixels) everywhere → bg IoU 0, class 1 IoU 2/3
    assert results["image_majority"].miou == pytest.approx((0 + 2 / 3) / 2)
    assert eval_metrics(results)["eval/cam_miou"] == pytest.approx(0.5)


def test_stacked_counts_sum_like_an_all_reduce():
    a, b = EvalCounts.zeros(C), EvalCounts.zeros(C)
    a.matrices["cam"][1, 2] = 5
    a.num_images = 2
    b.matrices["cam"][1, 2] = 7
    b.matrices["seg"][0, 0] = 1
    b.num_images = 3
    total = a.with_stacked(a.stacked() + b.stacked())
    assert total.matrices["cam"][1, 2] == 12 and total.matrices["seg"][0, 0] == 1 and total.num_images == 5


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    cfg = build_config("synthetic", {"model.depth": 1, "model.aux_layer": -1, "model.decoder_channels": 8})
    return build_model(cfg.model)


def _val_batches(num_images: int, batch: int) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    sizes = [(30 + 3 * i, 44 - 2 * i) for i in range(num_images)]
    items = [
        {
            "image": torch.randn(3, 32, 32, generator=g),
            "label": (torch.rand(20, generator=g) < 0.2).float(),
            "mask": torch.randint(0, 21, size, generator=g),
        }
        for size in sizes
    ]
    for item in items:
        item["mask"][0, :5] = 255
    return [
        {
            "image": torch.stack([it["image"] for it in items[i : i + batch]]),
            "label": torch.stack([it["label"] for it in items[i : i + batch]]),
            "mask": [it["mask"] for it in items[i : i + batch]],
        }
        for i in range(0, num_images, batch)
    ]


def test_evaluate_counts_every_valid_native_pixel_and_restores_the_mode(tiny_model):
    batches = _val_batches(5, batch=2)
    tiny_model.train()
    counts = evaluate(tiny_model, batches, num_classes=20, bkg_score=0.5, scales=(1.0,))
    assert tiny_model.training
    valid = sum(int((m != 255).sum()) for b in batches for m in b["mask"])
    assert counts.num_images == 5
    assert all(int(m.sum()) == valid for m in counts.matrices.values())


def test_in_training_cams_are_the_multiscale_cams_of_the_same_images(tiny_model):
    # the paper's M and M^m: multi-scale (1.0, 0.5, 1.5) + flip CAMs, as the reference's validate()
    batch = _val_batches(2, batch=2)[0]
    scales = build_config("synthetic").cam.scales
    assert scales == (1.0, 0.5, 1.5)
    tiny_model.eval()
    preds = predict(tiny_model, batch["image"], batch["label"], [m.shape for m in batch["mask"]], 0.5, scales)
    cam, aux_cam = multiscale_cam(tiny_model, batch["image"], scales)
    torch.testing.assert_close(preds.cams, cam)
    torch.testing.assert_close(preds.aux_cams, aux_cam)
    single = predict(tiny_model, batch["image"], batch["label"], [m.shape for m in batch["mask"]], 0.5, (1.0,))
    assert not torch.allclose(single.cams, cam)


def test_shards_summed_equal_the_whole_val_set(tiny_model):
    whole = evaluate(tiny_model, _val_batches(4, batch=4), num_classes=20, bkg_score=0.5, scales=(1.0,))
    parts = _val_batches(4, batch=1)
    shard0 = evaluate(tiny_model, parts[0::2], num_classes=20, bkg_score=0.5, scales=(1.0,))
    shard1 = evaluate(tiny_model, parts[1::2], num_classes=20, bkg_score=0.5, scales=(1.0,))
    summed = shard0.with_stacked(shard0.stacked() + shard1.stacked())
    for name, matrix in whole.matrices.items():
        assert torch.equal(summed.matrices[name], matrix), name


def test_iou_table_in_percent_with_missing_classes():
    table = iou_table({"cam": np.array([0.5, np.nan, 0.25])}, ["background", "a", "b"])
    assert table.splitlines() == [
        "| class | cam |",
        "|---|---:|",
        "| background | 50.0 |",
        "| a | – |",
        "| b | 25.0 |",
        "| **mean** | 37.5 |",  # (50 + 25) / 2, the absent class left out
    ]


def test_figures_have_one_panel_per_image_and_kind():
    images = torch.rand(2, 3, 16, 16)
    cams = torch.rand(2, 20, 16, 16)
    labels = torch.zeros(2, 20)
    labels[0, 3] = 1  # the second image has no present class: its heat map is all zero, not an error
    masks = [torch.zeros(20, 24, dtype=torch.long), torch.full((18, 18), 255)]
    seg = [torch.full((20, 24), 4, dtype=torch.long), torch.zeros(18, 18, dtype=torch.long)]
    fig = cam_overlay_figure(images, cams, cams, labels, masks, seg, ["a", "b"], title="it 3")
    assert len(fig.axes) == 2 * 5  # image, ground truth, CAM, aux CAM, seg
    # each row names the classes its heat maps show; the legend names the colours drawn (void is not a class)
    assert [ax.get_ylabel() for ax in fig.axes[::5]] == ["a\n(class4)", "b\n(no class)"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["background", "class4"]
    before_seg = cam_overlay_figure(images, cams, cams, labels, masks, None, ["a", "b"], class_names=[
        "background", *(f"c{k}" for k in range(1, 21))])
    assert len(before_seg.axes) == 2 * 4 and before_seg.axes[0].get_ylabel() == "a\n(c4)"
    conf = confusion_figure({"cam": np.eye(3), "seg": np.ones((3, 3))}, ["background", "a", "b"])
    assert len(conf.axes) == 3  # two panels and their colour bar
    assert all(label.get_fontsize() >= 9 for label in conf.axes[0].get_xticklabels())
    assert "normalised per ground-truth class" in conf._suptitle.get_text()
    curve = oversmoothing_figure({200: [0.1, 0.3], 400: [0.2, 0.6]})
    assert len(curve.axes) == 1 and len(curve.axes[0].lines) == 2
    # one more panel per cross-class pair kind; a NaN block (no such pair) is a gap, a negative cosine stays in view
    cross = {"fg_bg": {200: [0.1, -0.2], 400: [0.0, -0.4]}, "fg_fg": {400: [math.nan, 0.2]}}
    split = oversmoothing_figure({200: [0.1, 0.3], 400: [0.2, 0.6]}, cross)
    assert [len(ax.lines) for ax in split.axes] == [2, 2, 1]
    titles = [ax.get_title() for ax in split.axes]
    assert titles == ["all token pairs", "foreground–background pairs", "foreground pairs, different classes"]
    assert split.axes[0].get_ylim()[0] < -0.4
    assert split.axes[2].lines[0].get_color() == split.axes[0].lines[1].get_color()  # it 400 in both
