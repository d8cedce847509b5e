"""The report command against a mistyped store: one line, and no empty store created in its place (case 50)."""

import pytest

from pipelines.report import main as report_main

pytestmark = pytest.mark.unit


def test_case50_a_mistyped_output_dir_creates_no_store(tmp_path, monkeypatch, capsys):
    # the command used to open typo/mlflow.db, which created the folder and an empty 954 KB store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert report_main(["quick_demo", "--output-dir", "typo"]) == 2
    assert capsys.readouterr().err == (f"error: no MLflow store at {tmp_path / 'typo' / 'mlflow.db'}; is --output-dir "
                                       "(typo) the one the sweep ran with? (or set MLFLOW_TRACKING_URI)\n")
    assert list(tmp_path.iterdir()) == []


def test_a_tracking_uri_naming_a_missing_store_creates_nothing(tmp_path, monkeypatch, capsys):
    database = tmp_path / "gone" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{database}")
    assert report_main(["quick_demo", "--output-dir", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"error: no MLflow store at {database} (MLFLOW_TRACKING_URI=sqlite:///"
                                       f"{database}); point MLFLOW_TRACKING_URI at the store the sweep logged to\n")
    assert list(tmp_path.iterdir()) == []
