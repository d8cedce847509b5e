"""Bad input to ``pipelines.train`` fails with a clear message before Ray or any worker starts."""

import socket

import pytest

from pipelines import train
from toco_ray.distributed import launcher

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Fails the test if the launcher gets as far as starting or joining Ray."""

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started although the job was invalid")

    monkeypatch.setattr(launcher, "init_ray", refuse)


def _run(argv, capsys) -> tuple[int, str]:
    code = train.main(argv)
    return code, capsys.readouterr().err


def test_unknown_preset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--preset", "imagenet"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_missing_data_root(tmp_path, capsys):
    code, err = _run(
        ["--preset", "voc", "--data-root", str(tmp_path / "VOC2012"), "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and f"data root {tmp_path / 'VOC2012'} does not exist" in err


def test_data_root_with_the_wrong_layout(tmp_path, capsys):
    (tmp_path / "VOC2012").mkdir()
    code, err = _run(
        ["--preset", "voc", "--data-root", str(tmp_path / "VOC2012"), "--output-dir", str(tmp_path)], capsys
    )
    assert code == 2 and "JPEGImages" in err


def test_unreachable_mlflow_server(tmp_path, capsys, monkeypatch, tiny_root):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    code, err = _run(["--data-root", str(tiny_root), "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and f"MLflow tracking server http://127.0.0.1:{port} is not reachable" in err


def test_global_batch_that_does_not_split(tmp_path, capsys, tiny_root):
    code, err = _run(["--data-root", str(tiny_root), "--workers", "3", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "'train.global_batch' = 8 does not split over 3 workers" in err


def test_unknown_config_key(tmp_path, capsys):
    code, err = _run(["--set", "loss.wptc=0.3", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "did you mean 'loss.w_ptc'" in err


def test_resume_of_an_unknown_run(tmp_path, capsys):
    code, err = _run(["--resume", "toco-nope", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "cannot resume run 'toco-nope'" in err


def test_unknown_compat_key(tmp_path, capsys):
    code, err = _run(["--set", "compat.ptc_box=true", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "unknown config key 'compat.ptc_box'" in err and "compat.ptc_box_unscaled" in err


def test_timm_tag_that_does_not_exist(tmp_path, capsys):
    code, err = _run(["--set", "model.backbone=vit_tiny_patch16_224.no_such_tag", "--output-dir", str(tmp_path)],
                     capsys)
    assert code == 2 and "config key 'model.backbone'" in err and "no tag 'no_such_tag'" in err


def test_unknown_final_protocol(tmp_path, capsys):
    code, err = _run(["--set", "eval.protocol=ade", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "config key 'eval.protocol' expects one of voc, coco, got 'ade'" in err
