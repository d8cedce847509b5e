"""Optuna sampling of a search space: a define-by-run space that keeps every constraint (β_l < β_h) by construction.

Tune's ``points_to_evaluate`` needs a dict space, which cannot express a constraint between two keys; a
define-by-run function can: the upper key of ``a < b`` is drawn first and ``a``'s range cut just below it.

Example:
    >>> sampler = ConstrainedSpace(space, flatten(space.config()))   # space: search_spaces/toco_hpo.yaml
    >>> trial = optuna.create_study().ask()
    >>> sampler(trial)                       # draws cam.high_thre, then cam.low_thre below it, then the rest
    {'_optuna_trial': 0}
    >>> trial.params["cam.low_thre"] < trial.params["cam.high_thre"]
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from toco_ray.tuning.space import Param, SearchSpace, SpaceError


def sampling_order(space: SearchSpace) -> list[str]:
    """Searched keys ordered so that for every constraint ``a < b`` between them, ``b`` is drawn before ``a``."""
    keys = list(space.search)
    edges = [(c.upper, c.lower) for c in space.constraints if c.lower in space.search and c.upper in space.search]
    order: list[str] = []
    remaining = list(keys)
    while remaining:
        ready = [k for k in remaining if not any(lo == k and up in remaining for up, lo in edges)]
        if not ready:
            raise SpaceError(f"constraints form a cycle among {remaining}")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


class ConstrainedSpace:
    """Optuna define-by-run space: draws each searched key, clipping ranges so every constraint holds.

    The upper key of ``a < b`` is drawn first; ``a``'s range is then cut just below ``b``'s value (a fixed,
    unsearched side comes from the base config). Picklable, so Tune can checkpoint the searcher that holds it.

    Args:
        space: the loaded search space (kind optuna).
        fixed: the base config's flattened values (the unsearched side of a constraint).
    """

    TRIAL_NUMBER_KEY = "_optuna_trial"  # added to each suggested config: the Optuna trial number

    def __init__(self, space: SearchSpace, fixed: Mapping[str, Any]):
        self.params = dict(space.search)
        self.constraints = tuple(space.constraints)
        self.order = sampling_order(space)
        self.fixed = {c: fixed[c] for con in self.constraints for c in (con.lower, con.upper)}

    def __call__(self, trial) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for key in self.order:
            values[key] = self._suggest(trial, self.params[key], values)
        return {self.TRIAL_NUMBER_KEY: trial.number}

    def bounds(self, param: Param, values: Mapping[str, Any]) -> tuple[float, float]:
        """``param``'s range cut by the constraints whose other side is already known."""
        low, high = param.low, param.high
        known = {**self.fixed, **values}
        for c in self.constraints:
            if c.lower == param.key and c.upper in known and (c.upper in values or c.upper not in self.params):
                high = min(high, _below(known[c.upper], param.type == "int"))
            if c.upper == param.key and c.lower in known and (c.lower in values or c.lower not in self.params):
                low = max(low, _above(known[c.lower], param.type == "int"))
        return low, high

    def _suggest(self, trial, param: Param, values: Mapping[str, Any]) -> Any:
        if param.type == "categorical":
            return trial.suggest_categorical(param.key, list(param.choices))
        low, high = self.bounds(param, values)
        if param.type == "int":
            step = int(param.step or 1)
            high = low + (high - low) // step * step  # Optuna needs high on the step grid
            return trial.suggest_int(param.key, int(low), int(high), step=step)
        if param.step:
            high = low + math.floor((high - low) / param.step) * param.step
            return trial.suggest_float(param.key, low, high, step=param.step)
        return trial.suggest_float(param.key, low, high, log=param.type == "loguniform")


def _below(value: float, integer: bool) -> float:
    return value - 1 if integer else math.nextafter(value, -math.inf)


def _above(value: float, integer: bool) -> float:
    return value + 1 if integer else math.nextafter(value, math.inf)
