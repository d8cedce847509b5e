"""A one-line progress bar for inference runs: images done, images/s and ETA.

    infer val [#########-----------]  45/100  3.2 img/s  eta 17s  (1 skipped)
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from toco_ray.distributed.progress import format_duration

BAR_WIDTH = 20
MIN_REFRESH_S = 0.5  # redraw at most this often (a full dataset has thousands of images)


# the same compact form as the training progress lines
format_eta = format_duration


class ProgressBar:
    """Redraws one line on ``stream`` (stderr); throughput is measured from the first :meth:`update` call.

    Args:
        label: text before the bar.
        total: images to process in this run.
        stream: where to draw; a non-terminal stream gets a plain line every 10 % instead of redraws.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.done = self.skipped = 0
        self.start = time.perf_counter()
        self.last_draw = 0.0
        self.last_decile = 0
        self.interactive = self.stream.isatty()

    def update(self, skipped: bool = False) -> None:
        """One more image finished (``skipped``: it failed and was recorded, not processed)."""
        self.done += 1
        self.skipped += int(skipped)
        now = time.perf_counter()
        if self.done == self.total or self._due(now):
            self._draw(now)

    def _due(self, now: float) -> bool:
        if self.interactive:
            return now - self.last_draw >= MIN_REFRESH_S
        return self.done * 10 // max(self.total, 1) > self.last_decile

    @property
    def images_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else float("nan")

    def line(self) -> str:
        rate = self.images_per_s
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        filled = BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        skipped = f"  ({self.skipped} skipped)" if self.skipped else ""
        return f"{self.label} [{bar}] {self.done:>{len(str(self.total))}}/{self.total}  {rate:.2f} img/s  " \
               f"eta {format_eta(eta)}{skipped}"

    def _draw(self, now: float) -> None:
        self.last_draw = now
        self.last_decile = self.done * 10 // max(self.total, 1)
        end = "" if self.interactive and self.done < self.total else "\n"
        prefix = "\r" if self.interactive else ""
        print(prefix + self.line(), end=end, file=self.stream, flush=True)
