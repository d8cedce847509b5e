"""Output folders that cannot be used (a file, read-only, full) and stale outputs: one line, nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.infer import main as infer_main
from toco_ray.names import ALPHABET

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
needs_unshare = pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                                   reason="needs root and unshare for a private tmpfs")


def infer_args(checkpoint_dir: Path, out: Path, *extra: str) -> list[str]:
    return ["--checkpoint", str(checkpoint_dir), "--serial", "--no-mlflow", "--no-progress", "--out", str(out),
            "--output-dir", str(out.parent / "outputs"), *extra]


def test_case37_out_is_a_file(checkpoint_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("keep me")
    with pytest.raises(SystemExit) as exit_:
        infer_main(infer_args(checkpoint_dir, out, "--limit", "1"))
    assert exit_.value.code == 2 and capsys.readouterr().err == (
        f"error: output folder {out} cannot be used: [Errno 17] File exists; choose another --out\n")
    assert out.read_text() == "keep me"


def test_case36_no_resume_removes_the_outputs_of_other_settings(checkpoint_dir, tmp_path):
    out = tmp_path / "out"
    infer_main(infer_args(checkpoint_dir, out, "--mode", "cam", "--limit", "4"))
    assert len(list((out / "pseudo").iterdir())) == 4
    infer_main(infer_args(checkpoint_dir, out, "--mode", "cam", "--limit", "2", "--scales", "0.5", "--no-resume"))
    assert len(list((out / "pseudo").iterdir())) == 2  # the other 2 made with the old scales are gone
    assert json.loads((out / "run.json").read_text())["scales"] == [0.5]
    assert len(list((out / "records").iterdir())) == 2


def run_on_tmpfs(tmp_path: Path, checkpoint_dir: Path, mount_options: str, *extra: str):
    disk = tmp_path / "disk"
    disk.mkdir()
    args = " ".join(infer_args(checkpoint_dir, disk / "out", *extra))
    prepare = f"mount -t tmpfs -o {mount_options} tmpfs {disk}"
    command = f"{prepare} && {sys.executable} -m pipelines.infer {args}; echo rc=$?; ls -a {disk}/out/* 2>/dev/null"
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return disk / "out", done


@needs_unshare
def test_case38_out_on_a_read_only_file_system(checkpoint_dir, tmp_path):
    out, done = run_on_tmpfs(tmp_path, checkpoint_dir, "ro,size=1m", "--limit", "1")
    assert "rc=2" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: output folder {out} cannot be used: [Errno 30] Read-only file system; choose another --out")
    assert "Traceback" not in done.stderr


@needs_unshare
def test_case39_out_on_a_full_disk_leaves_no_partial_file(checkpoint_dir, tmp_path):
    out, done = run_on_tmpfs(tmp_path, checkpoint_dir, "size=48k", "--save-probs", "--limit", "8")
    assert "rc=2" in done.stdout, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write to output folder {out}: ") and "0.0 MiB free there); free" in last
    assert "Traceback" not in done.stderr
    assert ".tmp" not in done.stdout  # no temporary or half-written file is left in any output folder


def test_case48_a_tracking_store_that_is_not_sqlite(tmp_path, tiny_cfg, monkeypatch, capsys):
    from pipelines.train import main as train_main

    store = tmp_path / "mlflow.db"
    store.write_bytes(os.urandom(4096))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    rc = train_main(["--smoke", "--data-root", tiny_cfg.data.root, "--output-dir", str(tmp_path / "o"),
                     "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == (f"error: MLflow database {store} is not an SQLite database (file is not a database); point "
                   "MLFLOW_TRACKING_URI at the store, or move the file away\n")


@pytest.mark.parametrize("split", ["../../../evil", "val/../../evil"])
def test_case40_a_split_name_that_leaves_its_folder_is_refused(checkpoint_dir, tmp_path, split, capsys):
    # the split list was read from outside the data root and <split>-seg/ written outside --output-dir; now the
    # name is refused first (one line, exit status 2, as every refused option of every command)
    root = tmp_path / "outputs" / "x"
    with pytest.raises(SystemExit) as exit_:
        infer_main(["--checkpoint", str(checkpoint_dir), "--split", split, "--output-dir", str(root), "--serial",
                    "--no-mlflow", "--no-progress", "--limit", "1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: --split {split!r} is not a valid name: use {ALPHABET}\n"
    assert list(tmp_path.iterdir()) == []  # nothing inside the output root, nothing beside it
