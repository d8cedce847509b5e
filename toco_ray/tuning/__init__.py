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
"""

from toco_ray.tuning.checks import check_space, load_space
from toco_ray.tuning.space import GridSpace, OptunaSpace, SearchSpace, SpaceError

__all__ = ["GridSpace", "OptunaSpace", "SearchSpace", "SpaceError", "check_space", "load_space"]
