"""Sweeps and the paper's ablations: Ray Tune (+ Optuna, ASHA) over ToCo's knobs, MLflow parent/child runs, reports.

A search space (``search_spaces/*.yaml``, :mod:`~toco_ray.tuning.space`) is checked completely before Ray starts;
:func:`~toco_ray.tuning.sweep.run_sweep` runs each trial as one distributed training
(:mod:`~toco_ray.tuning.trial`) on a cluster split by :mod:`~toco_ray.tuning.cluster`, and resumes an interrupted
sweep; :mod:`~toco_ray.tuning.report` turns a sweep's MLflow runs into the paper's Table 4/5 layout
(:mod:`~toco_ray.tuning.paper` holds the paper's numbers). Command lines: ``pipelines/sweep.py``,
``pipelines/report.py``.
"""

from toco_ray.tuning.checks import check_space, load_space
from toco_ray.tuning.space import GridSpace, OptunaSpace, SearchSpace, SpaceError

__all__ = ["GridSpace", "OptunaSpace", "SearchSpace", "SpaceError", "check_space", "load_space"]
