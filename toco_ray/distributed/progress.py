"""Console progress for rank 0: one compact line per log period, one per evaluation.

it 120/600 | loss 1.234 (cls 0.512 cls_aux 0.498 ptc 0.301 ctc 0.402) | lr 4.1e-04 | 6.2 img/s | eta 3m10s
eval @ 200 | CAM 41.2 | aux CAM 38.7 | seg 35.0 mIoU | baselines: all-bg 3.6, majority 3.9, largest-fg 9.0 | 8.4 s
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping

from toco_ray.cli import format_duration
from toco_ray.engine import LOSS_TERMS
from toco_ray.metric_names import baseline_miou, eval_miou

EMA_DECAY = 0.8  # smoothing of the per-iteration time behind the ETA


def train_line(
    iteration: int, max_iters: int, losses: Mapping[str, float], lr: float, images_per_s: float, eta_s: float
) -> str:
    """The per-log-period line; ``losses`` holds ``total`` and the active terms."""
    terms = " ".join(f"{k} {losses[k]:.3f}" for k in LOSS_TERMS if k in losses)
    total = losses.get("total", float("nan"))
    return (
        f"it {iteration}/{max_iters} | loss {total:.3f} ({terms}) | lr {lr:.1e} | {images_per_s:.1f} img/s"
        f" | eta {format_duration(eta_s)}"
    )


def eval_line(iteration: int, metrics: Mapping[str, float], seconds: float) -> str:
    """The per-evaluation line (mIoU in %)."""

    def pct(key: str) -> str:
        return f"{100 * metrics[key]:.1f}" if key in metrics else "–"

    return (
        f"eval @ {iteration} | CAM {pct(eval_miou('cam'))} | aux CAM {pct(eval_miou('aux_cam'))} | "
        f"seg {pct(eval_miou('seg'))} mIoU | baselines: all-bg {pct(baseline_miou('all_background'))}, "
        f"majority {pct(baseline_miou('image_majority'))}, "
        f"largest-fg {pct(baseline_miou('image_largest_foreground'))} | {seconds:.1f} s"
    )


class Clock:
    """Training-time bookkeeping: throughput over the last period and ETA (evaluation time excluded)."""

    def __init__(self, start_iteration: int, max_iters: int, global_batch: int):
        self.max_iters, self.global_batch = max_iters, global_batch
        self.period_start = time.perf_counter()
        self.period_iters = 0
        self.iter_seconds = math.nan
        self.iteration = start_iteration

    def tick(self) -> None:
        """One iteration done."""
        self.period_iters += 1
        self.iteration += 1

    def pause(self) -> float:
        """Stops timing (before an evaluation); returns the time at which it stopped."""
        return time.perf_counter()

    def resume(self, paused_at: float) -> None:
        """Excludes the time since ``paused_at`` from the current period."""
        self.period_start += time.perf_counter() - paused_at

    def close_period(self) -> tuple[float, float]:
        """(images/s over the period, ETA in seconds) and starts a new period."""
        elapsed = time.perf_counter() - self.period_start
        if self.period_iters == 0 or elapsed <= 0:
            return math.nan, math.nan
        per_iter = elapsed / self.period_iters
        self.iter_seconds = (
            per_iter if math.isnan(self.iter_seconds) else (EMA_DECAY * self.iter_seconds + (1 - EMA_DECAY) * per_iter)
        )
        images_per_s = self.period_iters * self.global_batch / elapsed
        self.period_start, self.period_iters = time.perf_counter(), 0
        return images_per_s, self.iter_seconds * (self.max_iters - self.iteration)


def say(line: str) -> None:
    """Writes one progress line immediately.

    Written to stdout directly rather than with ``print``: Ray Train patches ``print`` in workers to also log the
    message, and the console would show every line twice.
    """
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
