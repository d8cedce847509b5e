"""Sweeps and the paper's ablations: Ray Tune (+ Optuna, ASHA) over ToCo's knobs, MLflow parent/child runs, reports.

A search space (``search_spaces/*.yaml``; schema :mod:`~toco_ray.tuning.space`, loaded and checked by
:mod:`~toco_ray.tuning.checks`) is checked completely before Ray starts. :func:`~toco_ray.tuning.sweep.run_sweep`
keeps the sweep's folder and ``sweep.json`` (:mod:`~toco_ray.tuning.state`), its MLflow record
(:mod:`~toco_ray.tuning.runs`: the parent run, the trials' runs, every tag name) and Tune
(:mod:`~toco_ray.tuning.tuner`), which runs each trial as one training run (:mod:`~toco_ray.tuning.trial`) on a
cluster split by :mod:`~toco_ray.tuning.cluster`, and resumes an interrupted sweep;
:mod:`~toco_ray.tuning.report` turns a sweep's MLflow runs into the paper's Table 4/5 layout
(:mod:`~toco_ray.tuning.paper` holds the paper's numbers). Command lines: ``pipelines/sweep.py``,
``pipelines/report.py``.

The names below are imported on first use: reading a sweep back (the report) loads neither torch nor Ray, while
checking a space builds configs against the backbone (timm, torch).
"""

import importlib

_EXPORTS = {
    "toco_ray.tuning.checks": ("check_space", "load_space"),
    "toco_ray.tuning.space": ("GridSpace", "OptunaSpace", "SearchSpace", "SpaceError"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
