"""Output folder: atomic writes, what counts as done, and refusing to mix runs with different settings."""

import json

import numpy as np
import pytest
from PIL import Image

from toco_ray.data.palette import voc_palette
from toco_ray.inference.outputs import (
    OutputError,
    OutputLayout,
    atomic_write,
    prepare_output,
    write_json,
    write_label_png,
)

pytestmark = pytest.mark.unit

SETTINGS = {"checkpoint": "/ckpt", "split": "val", "mode": "seg", "scales": (1.0, 1.5), "crf": True}


def test_label_png_keeps_class_ids_and_the_voc_palette(tmp_path):
    labels = np.array([[0, 1, 20], [255, 3, 0]], np.uint8)
    path = write_label_png(tmp_path / "seg" / "a.png", labels)
    with Image.open(path) as img:
        assert img.mode == "P"
        np.testing.assert_array_equal(np.asarray(img), labels)
        assert img.getpalette()[3:6] == voc_palette()[1].tolist()  # class 1 = (128, 0, 0)


def test_a_failed_write_leaves_neither_file_nor_temp(tmp_path):
    def explode(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.json", explode)
    assert list(tmp_path.iterdir()) == []


def test_done_names_are_the_records_only(tmp_path):
    layout = OutputLayout(tmp_path)
    write_json(layout.record("a"), {})
    (tmp_path / "records" / ".b.json.123.tmp").write_text("{")  # an interrupted write
    write_label_png(layout.label_png("seg", "c"), np.zeros((2, 2), np.uint8))  # outputs without a record
    assert layout.done_names() == {"a"}


def test_resume_requires_the_same_settings(tmp_path):
    layout = OutputLayout(tmp_path)
    assert prepare_output(layout, SETTINGS, resume=True) == set()
    write_json(layout.record("a"), {})
    assert prepare_output(layout, SETTINGS, resume=True) == {"a"}  # tuples compare equal to the stored lists
    with pytest.raises(OutputError, match=r"crf: True → False.*--no-resume"):
        prepare_output(layout, {**SETTINGS, "crf": False}, resume=True)


def test_no_resume_starts_over_with_the_new_settings(tmp_path):
    layout = OutputLayout(tmp_path)
    prepare_output(layout, SETTINGS, resume=True)
    write_json(layout.record("a"), {})
    assert prepare_output(layout, {**SETTINGS, "crf": False}, resume=False) == set()
    assert layout.done_names() == set()
    assert json.loads(layout.run_file.read_text())["crf"] is False
