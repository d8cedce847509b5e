"""Metric and tag names are typed once: in the vocabulary modules, and nowhere else in the package or the entry points.

Every string literal of ``toco_ray/`` and ``pipelines/`` (f-string parts included, docstrings excluded) is read with
``ast``; one that spells an MLflow metric, a Tune report key or a sweep tag outside the module that defines it fails.
"""

import ast
from pathlib import Path

import pytest

from toco_ray import metric_names
from toco_ray.tuning import runs

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[1]
VOCABULARY = {REPO / "toco_ray" / "metric_names.py", REPO / "toco_ray" / "tuning" / "runs.py"}
METRIC_PREFIXES = ("eval/", "loss/", "baseline/", "oversmoothing/", "oversmoothing_fg", "sweep/",
                   metric_names.THROUGHPUT)
TAG_PREFIX = "toco.sweep."
TAGS = {value for name, value in vars(runs).items() if name.endswith("_TAG") and isinstance(value, str)}


def literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal in the file but its docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
        and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def misplaced(text: str) -> bool:
    return (text.startswith(METRIC_PREFIXES) or text == "oversmoothing" or "_miou" in text
            or text.startswith(TAG_PREFIX) or text in TAGS - {runs.RUN_NAME_TAG})


def test_the_vocabulary_knows_what_it_guards():
    assert metric_names.REPORT_METRICS == {"cam_miou": "eval/cam_miou", "aux_cam_miou": "eval/aux_cam_miou",
                                           "seg_miou": "eval/seg_miou"}
    assert {"toco.sweep.role", "toco.sweep.stopped_early", "optuna.storage", "optuna.study_name"} <= TAGS
    assert all(misplaced(text) for text in ["eval/cam_miou", "seg_miou", "f'{kind}_miou'", "toco.sweep.row",
                                            "optuna.storage", "loss/total", "throughput/images_per_s"])
    assert not any(misplaced(text) for text in ["optuna.db", "iteration", "loss", "lr", "oversmoothing_figure"])


def test_no_metric_or_tag_name_is_typed_outside_the_vocabulary_modules():
    files = sorted({*(REPO / "toco_ray").rglob("*.py"), *(REPO / "pipelines").glob("*.py")} - VOCABULARY)
    found = [f"{path.relative_to(REPO)}:{line}: {text!r}"
             for path in files for line, text in literals(path) if misplaced(text)]
    assert found == []
