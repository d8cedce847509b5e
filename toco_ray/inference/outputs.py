"""The output folder of an inference run: where each file goes, atomic writes, and what is already done.

Layout of ``out/``::

    run.json                  settings of the run (a resumed run must match them)
    <kind>/<name>.png         palette PNG label maps: seg, seg_crf (seg mode); pseudo, pseudo_crf (cam mode)
    probs/<name>.npy          optional float16 scores at reduced resolution (seg: probabilities, cam: CAM)
    records/<name>.json       per-image result (sparse confusion counts, timings); written last: marks it done
    results.parquet           all per-image records as one table
    failures.jsonl            images skipped with --skip-bad (name, file, error)
    summary.json              mIoU, per-class IoU, throughput, counts
    overlays/<name>.png       a few prediction overlays

Every file is written to a temporary name in the same folder and renamed, so an interrupted run never leaves a
half-written output; an image whose record exists is not processed again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from toco_ray.atomic import atomic_write
from toco_ray.data.palette import voc_palette
from toco_ray.errors import TocoError

RUN_FILE = "run.json"
RECORDS_DIR = "records"
PROBS_DIR = "probs"
OVERLAYS_DIR = "overlays"
RESULTS_FILE = "results.parquet"
FAILURES_FILE = "failures.jsonl"
SUMMARY_FILE = "summary.json"
LABEL_KINDS = ("seg", "seg_crf", "pseudo", "pseudo_crf")  # the <kind>/ folders of label maps


class OutputError(TocoError, RuntimeError):
    """The output folder cannot be used for this run; the message says why and what to do."""


class OutputLayout:
    """Paths inside one run's output folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def label_png(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.png"

    def probs(self, name: str) -> Path:
        return self.root / PROBS_DIR / f"{name}.npy"

    def record(self, name: str) -> Path:
        return self.root / RECORDS_DIR / f"{name}.json"

    def overlay(self, name: str) -> Path:
        return self.root / OVERLAYS_DIR / f"{name}.png"

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def results(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def failures(self) -> Path:
        return self.root / FAILURES_FILE

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY_FILE

    def done_names(self) -> set[str]:
        """Names whose record exists (their outputs are complete)."""
        folder = self.root / RECORDS_DIR
        if not folder.is_dir():
            return set()
        return {f[: -len(".json")] for f in os.listdir(folder) if f.endswith(".json") and not f.startswith(".")}

    def read_records(self, names: Iterable[str]) -> list[dict[str, Any]]:
        """The records of ``names`` (each must exist), in that order."""
        return [json.loads(self.record(name).read_text()) for name in names]


# --- atomic writes ---------------------------------------------------------------------------------------


def write_label_png(path: Path, labels: np.ndarray) -> Path:
    """Writes an ``H×W`` uint8 label map as a palette PNG (VOC colours; the pixel values are the class ids)."""
    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    image.putpalette(voc_palette().ravel().tolist())
    return atomic_write(path, lambda fh: image.save(fh, format="PNG"))


def write_json(path: Path, data: Any) -> Path:
    return atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=1).encode()))


def write_npy(path: Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda fh: np.save(fh, array))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    return atomic_write(path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in rows).encode()))


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Writes flat dict rows (scalars and int lists) as one Parquet table."""
    table = pa.Table.from_pylist(rows)
    return atomic_write(path, lambda fh: pq.write_table(table, fh))


# --- resuming -------------------------------------------------------------------------------------------
def prepare_output(layout: OutputLayout, settings: dict[str, Any], resume: bool) -> set[str]:
    """Checks (or writes) ``run.json`` and returns the names already done.

    Args:
        layout: the output folder.
        settings: what determines the outputs (checkpoint, split, mode, scales, CRF, ...), JSON-serialisable.
        resume: keep the outputs of a previous run with the same settings; False starts over.

    Raises:
        OutputError: the folder holds a run with different settings and ``resume`` is set.
    """
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        if not os.access(layout.root, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise OutputError(
            f"output folder {layout.root} cannot be used: {os_reason(err)}; choose another --out"
        ) from None
    settings = json.loads(json.dumps(settings))  # tuples → lists, as they read back from run.json
    if not resume:
        clear_outputs(layout)
    elif layout.run_file.is_file():
        previous = json.loads(layout.run_file.read_text())
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in changed.items())
            raise OutputError(
                f"output folder {layout.root} holds a run with other settings ({detail}); "
                "choose another --out, or pass --no-resume to start over in it"
            )
    try:
        write_json(layout.run_file, settings)
    except OSError as err:
        raise OutputError(f"cannot write {layout.run_file}: {os_reason(err)}; choose another --out") from None
    return layout.done_names() if resume else set()


def clear_outputs(layout: OutputLayout) -> None:
    """Removes what an inference run writes (and nothing else), so no file of other settings stays behind."""
    root = layout.root
    for folder in (RECORDS_DIR, PROBS_DIR, OVERLAYS_DIR, *LABEL_KINDS):
        shutil.rmtree(root / folder, ignore_errors=True)
    for name in (RUN_FILE, RESULTS_FILE, FAILURES_FILE, SUMMARY_FILE):
        (root / name).unlink(missing_ok=True)


_ERRNO = re.compile(r"\[Errno \d+\] [^:\n']+")


def os_reason(err: BaseException) -> str:
    """The OS reason of a failed file operation in a few words (``[Errno 28] No space left on device``), also when
    it comes wrapped in a Ray task error."""
    if isinstance(err, OSError) and err.strerror and type(err).__module__ == "builtins":
        return f"[Errno {err.errno}] {err.strerror}"
    found = _ERRNO.search(str(err))
    return found.group(0).strip() if found else str(err).strip().splitlines()[0]
