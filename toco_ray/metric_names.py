"""The names of what a training run measures: its MLflow metric keys and the keys of each evaluation's report.

Written here once and imported by everything that writes or reads them: evaluation and the worker loop (which
produce them), a sweep's trials, ASHA and Optuna (which read the report keys), the sweep report, the progress lines
and the command lines. This module imports nothing, so entry points and the report load it for free.

Example:
    >>> eval_miou("cam"), report_key("cam"), REPORT_METRICS["seg_miou"]
    ('eval/cam_miou', 'cam_miou', 'eval/seg_miou')
"""

KINDS = ("cam", "aux_cam", "seg")  # predictions scored at each evaluation: the paper's M, M^m and Seg
PAPER_COLUMN = {"cam": "M", "aux_cam": "M^m", "seg": "Seg"}  # each kind's column in the paper's tables
# the loss weight that trains a kind's head: with it at 0 the kind is not a result of the run (Table 4's "–")
HEAD_WEIGHT = {"aux_cam": "loss.w_cls_aux", "seg": "loss.w_seg"}


def trained_kinds(config: dict) -> dict[str, bool]:
    """``{kind: whether the run trains its head}`` from a flattened config or a run's params (values as logged)."""
    return {kind: float(config.get(HEAD_WEIGHT.get(kind, ""), 1.0)) > 0 for kind in KINDS}
# trivial predictions scored from the ground truth alone (see evaluation.baseline_predictions)
BASELINES = ("all_background", "image_majority", "image_largest_foreground")


def eval_miou(kind: str) -> str:
    """``eval/<kind>_miou``: mIoU of a prediction kind on the val split."""
    return f"eval/{kind}_miou"


def eval_pixel_acc(kind: str) -> str:
    return f"eval/{kind}_pixel_acc"


def baseline_miou(name: str) -> str:
    return f"baseline/{name}_miou"


def loss_metric(term: str) -> str:
    """``loss/<term>``: a loss term (or ``total``) averaged over a log period and over workers."""
    return f"loss/{term}"


LOSS_TOTAL = loss_metric("total")
LEARNING_RATE = "lr"
THROUGHPUT = "throughput/images_per_s"  # training images per second over a log period (evaluation excluded)
EVAL_NUM_IMAGES = "eval/num_images"


def oversmoothing_key(pair_kind: str) -> str:
    """Metric prefix (and history key) of an over-smoothing curve: ``oversmoothing`` for all token pairs,
    ``oversmoothing_<pair kind>`` for a cross-class pair type (``fg_bg``, ``fg_fg``)."""
    return "oversmoothing" if pair_kind == "all" else f"oversmoothing_{pair_kind}"


def oversmoothing_metric(pair_kind: str, block: int) -> str:
    """``oversmoothing_fg_bg/block_01``: the curve's value at 0-based ``block``."""
    return f"{oversmoothing_key(pair_kind)}/block_{block + 1:02d}"


PAIR_TITLES = {  # the token-pair kinds of the over-smoothing curves, as figures title them
    "all": "all token pairs",
    "fg_bg": "foreground–background pairs",
    "fg_fg": "foreground pairs, different classes",
}


def oversmoothing_curves(metrics: dict[str, float]) -> dict[str, list[float]]:
    """``{pair kind: [value at block 1, ..., block L]}`` from a run's metrics (its latest value per key); a pair
    kind without metrics is absent, a block missing from a curve (no such pair in the probes) is NaN."""
    curves: dict[str, dict[int, float]] = {}
    for kind in PAIR_TITLES:
        prefix = oversmoothing_key(kind) + "/block_"
        blocks = {int(key[len(prefix):]): value for key, value in metrics.items()
                  if key.startswith(prefix) and key[len(prefix):].isdigit()}
        if blocks:
            curves[kind] = blocks
    return {kind: [blocks.get(b, float("nan")) for b in range(1, max(blocks) + 1)] for kind, blocks in curves.items()}


# --- what every rank reports to Ray Train at each evaluation (and a sweep trial to Tune) ---------------------------
REPORT_ITERATION = "iteration"  # the iteration of the evaluation: ASHA's time axis
REPORT_LOSS = "loss"  # the total loss of the last log period


def report_key(kind: str) -> str:
    """``<kind>_miou``: the report key of a prediction kind's mIoU, what a search space's ``metric`` names."""
    return f"{kind}_miou"


REPORT_METRICS = {report_key(kind): eval_miou(kind) for kind in KINDS}  # report key → MLflow metric
