"""Loading a search space: its file read and parsed (:mod:`~toco_ray.tuning.space`), then checked against the
typed config before any trial starts.

The config is built for every grid point, both ends of every range and every choice (so a wrongly typed value fails
with its key), constraints are checked on every point and their feasibility on every range pair, ``model.aux_layer``
is resolved against the backbone's depth, an ASHA grace period must end before the schedule does, and the paper rows
must be rows of the sweep. Each failure is a :class:`~toco_ray.tuning.space.SpaceError` naming the file and the key.

Example:
    >>> space = load_space("search_spaces/toco_hpo.yaml", {"data.root": "/data/VOC2012"})
    >>> space.kind, space.trial_count()
    ('optuna', 40)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from toco_ray.config import ConfigError, ToCoConfig, describe_yaml_error, flatten, read_text, yaml_load
from toco_ray.config_checks import check_config
from toco_ray.tuning.sampling import sampling_order
from toco_ray.tuning.space import Constraint, OptunaSpace, SearchSpace, SpaceError, format_value, parse_space


def load_space(path: str | Path, extra: Mapping[str, Any] | None = None) -> SearchSpace:
    """Reads, parses and checks a search-space YAML file (schema: :mod:`toco_ray.tuning.space`).

    Args:
        path: the YAML file.
        extra: command-line overrides every trial will get (checked with the space's own).

    Raises:
        SpaceError: anything wrong with the file, naming the file and the key.
    """
    path = Path(path)
    if not path.exists():
        raise SpaceError(f"search space {path} does not exist (the shipped ones are in search_spaces/)")
    try:
        text = read_text(path, "search space")
    except ConfigError as err:
        raise SpaceError(str(err)) from None
    try:
        data = yaml_load(text)
    except yaml.YAMLError as err:
        raise SpaceError(f"{path}: not valid YAML: {describe_yaml_error(err)}") from None
    try:
        space = parse_space(data, name=path.stem, path=str(path), text=text)
        check_paper_rows(space)
        check_space(space, extra)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    return space


def check_space(space: SearchSpace, extra: Mapping[str, Any] | None = None) -> None:
    """Builds and checks every config the sweep can produce (``extra``: command-line overrides).

    Raises:
        SpaceError: a key or value the config rejects, a violated constraint, a bad ``model.aux_layer``,
            an ASHA grace period beyond the schedule.
    """
    base = _build(space, {}, extra, "base.set and the command line" if extra else "base.set")
    _check_constraint_keys(space, base)
    if space.kind == "grid":
        _check_grid(space, extra)
    else:
        _check_search(space, base, extra)
    _check_asha(space, space.config())  # the space as written; a shorter command-line schedule clamps the grace


def _build(space: SearchSpace, overrides: Mapping[str, Any], extra: Mapping[str, Any] | None, where: str,
           seed: int | None = None) -> ToCoConfig:
    try:
        cfg = space.config(overrides, seed, extra)
    except ConfigError as err:
        raise SpaceError(f"{where}: {err}") from None
    check_model(cfg, where)
    return cfg


def _check_grid(space: SearchSpace, extra: Mapping[str, Any] | None) -> None:
    for variant in space.variants:  # each variant alone first, so an error names the variant
        _build(space, variant.overrides, extra, f"variant {variant.name!r}")
    for key, values in space.grid.items():
        for value in values:
            _build(space, {key: value}, extra, f"grid.{key}")
    for point in space.grid_points():
        where = "grid point " + (", ".join(f"{k}={format_value(v)}" for k, v in point.overrides.items()) or "{}")
        cfg = _build(space, point.overrides, extra, where, point.seed)
        _check_constraints(space, flatten(cfg), where)


def _check_search(space: SearchSpace, base: ToCoConfig, extra: Mapping[str, Any] | None) -> None:
    for key, param in space.search.items():
        for value in param.ends():
            _build(space, {key: value}, extra, f"search.{key}")
    fixed = flatten(base)
    for constraint in space.constraints:
        _check_feasible(space, constraint, fixed)
    for i, point in enumerate(space.points_to_evaluate):
        cfg = _build(space, point, extra, f"points_to_evaluate[{i}]")
        _check_constraints(space, flatten(cfg), f"points_to_evaluate[{i}]")
    sampling_order(space)  # raises on a cycle


def _check_constraint_keys(space: SearchSpace, base: ToCoConfig) -> None:
    known = flatten(base)
    searched = space.search if isinstance(space, OptunaSpace) else {}
    for constraint in space.constraints:
        for key in (constraint.lower, constraint.upper):
            if key not in known:
                raise SpaceError(f"constraint '{constraint}': unknown config key {key!r}")
            if not isinstance(known[key], (int, float)) or isinstance(known[key], bool):
                raise SpaceError(f"constraint '{constraint}': config key {key!r} is not a number")
            if key in searched and not searched[key].numeric:
                raise SpaceError(f"constraint '{constraint}': search.{key} is categorical; constrain ranges only")


def _check_constraints(space: SearchSpace, values: Mapping[str, Any], where: str) -> None:
    for constraint in space.constraints:
        if not constraint.holds(values):
            raise SpaceError(
                f"{where}: constraint '{constraint}' does not hold ({constraint.lower} = "
                f"{values[constraint.lower]!r}, {constraint.upper} = {values[constraint.upper]!r})"
            )


def _check_feasible(space: SearchSpace, constraint: Constraint, fixed: Mapping[str, Any]) -> None:
    """Sampling fixes the upper key first, then draws the lower one below it: every draw must leave room."""
    lower, upper = space.search.get(constraint.lower), space.search.get(constraint.upper)
    low_of_lower = lower.low if lower else fixed[constraint.lower]
    low_of_upper = upper.low if upper else fixed[constraint.upper]
    high_of_upper = upper.high if upper else fixed[constraint.upper]
    if lower and upper and not low_of_lower < low_of_upper:
        raise SpaceError(
            f"constraint '{constraint}': search.{constraint.lower}.low ({low_of_lower}) must be below "
            f"search.{constraint.upper}.low ({low_of_upper}), or some {constraint.upper} leave no valid "
            f"{constraint.lower}"
        )
    if not low_of_lower < high_of_upper:
        key = constraint.lower if lower else constraint.upper
        raise SpaceError(
            f"constraint '{constraint}' can never hold: {constraint.lower} ≥ {low_of_lower} and "
            f"{constraint.upper} ≤ {high_of_upper} (check search.{key} or base.set)"
        )


def _check_asha(space: SearchSpace, base: ToCoConfig) -> None:
    if space.asha is None:
        return
    grace = space.asha.grace_period(base)
    if grace >= base.schedule.max_iters:
        raise SpaceError(
            f"key 'asha.grace_iters': schedule.seg_start_iter ({base.schedule.seg_start_iter}) + grace_iters "
            f"({space.asha.grace_iters}) = {grace} must be below schedule.max_iters ({base.schedule.max_iters}): "
            "ASHA stops trials before their end"
        )


def check_paper_rows(space: SearchSpace) -> None:
    if space.paper is None or space.kind != "grid":
        return
    labels = set(space.row_labels())
    stray = sorted(set(space.paper.rows) - labels)
    if stray:
        raise SpaceError(f"key 'paper.rows': {stray[0]!r} is not a row of this sweep (rows: {sorted(labels)})")


def check_model(cfg: ToCoConfig, where: str) -> None:
    """Every value in range (:func:`~toco_ray.config_checks.check_config`), ``model.aux_layer`` inside the backbone."""
    try:
        check_config(cfg)
    except ConfigError as err:
        raise SpaceError(f"{where}: {err}") from None

