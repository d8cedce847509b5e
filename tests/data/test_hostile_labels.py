"""Label files are read without unpickling; the reference's dict file goes through an explicit converter."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from pipelines.convert_labels import main as convert_main
from toco_ray.data import DatasetError, VOCDataset
from toco_ray.data.labels import load_label_file

pytestmark = pytest.mark.unit


class Payload:
    """Pickles as a call to os.system: unpickling it would create ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_case34_pickled_code_in_cls_labels_does_not_run(voc_root, tmp_path):
    marker = tmp_path / "PWNED"
    np.save(voc_root / "cls_labels.npy", {"__pwn__": Payload(marker)}, allow_pickle=True)
    with pytest.raises(DatasetError) as caught:
        VOCDataset(voc_root, "val")
    assert not marker.exists()
    assert str(caught.value) == (
        f"label file {voc_root / 'cls_labels.npy'} holds pickled Python objects (the reference's dict format), "
        "which are not loaded because unpickling can run code; if you trust the file, convert it once: "
        f"python -m pipelines.convert_labels {voc_root / 'cls_labels.npy'}"
    )


def test_the_converter_refuses_code_and_writes_nothing(voc_root, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    src = voc_root / "cls_labels_onehot.npy"
    np.save(src, {"val_00000": Payload(marker)}, allow_pickle=True)
    assert convert_main([str(src), "--out", str(tmp_path / "converted.npy")]) == 2
    assert not marker.exists() and not (tmp_path / "converted.npy").exists()
    err = capsys.readouterr().err
    assert err.startswith(f"error: label file {src} cannot be converted: refusing to load posix.system")


def test_the_converter_turns_the_reference_dict_into_a_pickle_free_file(voc_root, capsys):
    labels = load_label_file(voc_root / "cls_labels.npy", 20)
    (voc_root / "cls_labels.npy").unlink()
    src = voc_root / "cls_labels_onehot.npy"
    np.save(src, {name: vector.astype(np.float32) for name, vector in labels.items()}, allow_pickle=True)
    with pytest.raises(DatasetError, match="pickled Python objects"):
        VOCDataset(voc_root, "val")
    assert convert_main([str(src)]) == 0
    assert capsys.readouterr().out == f"{len(labels)} labels written to {voc_root / 'cls_labels.npy'}\n"
    np.load(voc_root / "cls_labels.npy", allow_pickle=False)  # loads without pickle
    dataset = VOCDataset(voc_root, "val")  # cls_labels.npy is found before cls_labels_onehot.npy
    assert all(np.array_equal(dataset.labels[n], labels[n]) for n in dataset.names)


def test_in_place_conversion_keeps_the_original(voc_root):
    path = voc_root / "cls_labels.npy"
    labels = load_label_file(path, 20)
    np.save(path, dict(labels), allow_pickle=True)
    original = path.read_bytes()
    assert convert_main([str(path)]) == 0
    assert (voc_root / "cls_labels.pickled.npy").read_bytes() == original
    assert load_label_file(path, 20).keys() == labels.keys()


def test_written_label_files_have_the_umask_mode(voc_root):
    mode = stat.S_IMODE((voc_root / "cls_labels.npy").stat().st_mode)
    umask = os.umask(0o022)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # not mkstemp's 0600
