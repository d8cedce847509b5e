"""Search spaces: a YAML file describing a sweep as a small diff from a preset, checked completely before Ray starts.

A search space is data; it runs nothing. Schema (every key but ``base`` and ``kind`` optional)::

    description: one line shown in reports
    base:
      preset: synthetic             # toco_ray.config preset the sweep starts from (voc | coco | synthetic)
      set: {schedule.max_iters: 90} # dotted-key overrides applied to every trial
    kind: grid                      # grid | optuna
    metric: seg_miou                # what Tune/ASHA/Optuna read: seg_miou | cam_miou | aux_cam_miou
    mode: max                       # max | min
    seeds: [0, 1, 2]                # train.seed of the trials; a grid runs every point once per seed
                                    # (optuna: one seed, which also seeds the TPE sampler)
    # kind: grid ------------------------------------------------------------------------------------
    variants:                       # named override sets (e.g. the rows of Table 4), crossed with `grid`
      - {name: "+PTC", set: {loss.w_ptc: 0.2, loss.w_ctc: 0.0}}
    grid:                           # dotted key → the values to try (the cartesian product is run)
      ctc.local_crop_size: [64, 80, 96, 112]
    # kind: optuna ----------------------------------------------------------------------------------
    num_samples: 20                 # Optuna trials
    search:                         # dotted key → a range
      cam.high_thre: {type: float, low: 0.55, high: 0.85}
      loss.w_ptc: {type: loguniform, low: 0.05, high: 1.0}
      ctc.local_crop_size: {type: int, low: 64, high: 112, step: 16}
      model.aux_layer: {type: categorical, choices: [7, 8, 9, 10]}
    constraints: ["cam.low_thre < cam.high_thre"]   # enforced while sampling, checked on every grid point
    points_to_evaluate: [{cam.high_thre: 0.7, ...}] # full points, run first (e.g. the paper's setting)
    # either kind ------------------------------------------------------------------------------------
    asha: {grace_iters: 60, reduction_factor: 2}    # ASHA on `metric`; a trial may be stopped only after
                                                    # schedule.seg_start_iter + grace_iters iterations
                                                    # (absent = every trial trains to schedule.max_iters)
    paper: {table: "5b", rows: {64: "64"}}          # reference numbers shown beside the results
                                                    # (toco_ray/tuning/paper.py; rows: our label → paper row)

Everything is checked by :func:`load_space` (with :mod:`~toco_ray.tuning.checks`) before any trial starts, and a
failure is a :class:`SpaceError` naming the file and the key: unknown keys (top level, ``base.set``, ``grid``,
``search``, variants — with the closest config key suggested), wrong types (the config is built for every grid
point, both ends of every range and every choice), empty grids, bad ranges, constraints that do not hold
(``cam.low_thre < cam.high_thre`` always applies: β_l < β_h defines the band of uncertain tokens),
``model.aux_layer`` outside the backbone, an ASHA grace period beyond the schedule, unknown paper rows.

Row labels: a variant's name, or for a one-key grid the value (``64``, ``0.9``), or ``key=value, ...``.

Example:
    >>> space = load_space("search_spaces/table5b_crop_size.yaml")
    >>> [p.label for p in space.grid_points()][:2]
    ['64', '64']
    >>> space.trial_count()
    12
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toco_ray.config import PRESETS, ConfigError, ToCoConfig, build_config, describe_yaml_error, read_text, yaml_load
from toco_ray.errors import TocoError
from toco_ray.tuning import paper

KINDS = ("grid", "optuna")
METRICS = ("seg_miou", "cam_miou", "aux_cam_miou")  # the keys each evaluation reports to Tune
MODES = ("max", "min")
PARAM_TYPES = ("float", "int", "loguniform", "categorical")
TOP_KEYS = {
    "description", "base", "kind", "metric", "mode", "seeds", "variants", "grid", "num_samples", "search",
    "constraints", "points_to_evaluate", "asha", "paper",
}
GRID_ONLY = ("variants", "grid")
OPTUNA_ONLY = ("num_samples", "search", "points_to_evaluate")
SEED_KEY = "train.seed"
# β_l < β_h is what makes the band of uncertain tokens (SPEC §2): every space obeys it, stated or not.
IMPLICIT_CONSTRAINTS = ("cam.low_thre < cam.high_thre",)
CONSTRAINT_PATTERN = re.compile(r"^\s*([\w.]+)\s*<\s*([\w.]+)\s*$")
DEFAULT_ASHA_REDUCTION = 2.0


class SpaceError(TocoError, ValueError):
    """A search space is invalid; the message names the file and the key."""


@dataclass(frozen=True)
class Param:
    """One Optuna dimension: ``type`` float | int | loguniform (low..high) or categorical (choices)."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def numeric(self) -> bool:
        return self.type != "categorical"

    def ends(self) -> tuple[Any, ...]:
        """The values whose configs are built at load time: both ends of a range, every choice."""
        return self.choices if self.type == "categorical" else (self.low, self.high)


@dataclass(frozen=True)
class Constraint:
    """``lower < upper`` between two config keys."""

    lower: str
    upper: str

    def __str__(self) -> str:
        return f"{self.lower} < {self.upper}"

    def holds(self, values: Mapping[str, Any]) -> bool:
        return values[self.lower] < values[self.upper]


@dataclass(frozen=True)
class Variant:
    """A named set of overrides (a row of an ablation table)."""

    name: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Point:
    """One grid trial: the overrides of its row and its seed.

    Attributes:
        index: position in the sweep's enumeration (variants × grid × seeds, seeds innermost).
        label: the row label (variant name and/or grid values), the same for every seed.
        overrides: dotted-key overrides of this row (on top of ``base.set``), without the seed.
        seed: ``train.seed``.
    """

    index: int
    label: str
    overrides: dict[str, Any]
    seed: int

    @property
    def slug(self) -> str:
        """A short, filesystem-safe name: row label, seed and index."""
        text = re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_").lower() or "point"
        return f"p{self.index:02d}-{text[:40]}-s{self.seed}"


@dataclass(frozen=True)
class Asha:
    """ASHA early stopping on the space's metric, measured in training iterations."""

    grace_iters: int
    reduction_factor: float = DEFAULT_ASHA_REDUCTION

    def grace_period(self, cfg: ToCoConfig) -> int:
        """Iterations before a trial may be stopped: the seg loss's switch-on plus ``grace_iters``."""
        return cfg.schedule.seg_start_iter + self.grace_iters


@dataclass(frozen=True)
class PaperRef:
    """Which of the paper's tables the results sit beside, and our row label → the paper's row label."""

    table: str
    rows: dict[str, str] = field(default_factory=dict)

    def row_for(self, label: str) -> str:
        return self.rows.get(label, label)


@dataclass
class SearchSpace:
    """A loaded, fully checked search space (see the module docstring for the YAML schema)."""

    name: str
    path: str
    text: str
    preset: str
    base_set: dict[str, Any]
    kind: str
    metric: str = "seg_miou"
    mode: str = "max"
    description: str = ""
    seeds: tuple[int, ...] = (0,)
    variants: tuple[Variant, ...] = ()
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    num_samples: int = 1
    search: dict[str, Param] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    points_to_evaluate: tuple[dict[str, Any], ...] = ()
    asha: Asha | None = None
    paper: PaperRef | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the file's text: a resumed sweep must run the space it started with."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    def config(self, overrides: Mapping[str, Any] | None = None, seed: int | None = None,
               extra: Mapping[str, Any] | None = None) -> ToCoConfig:
        """The trial config: preset, then ``base.set``, then ``extra`` (command line), ``overrides``, the seed."""
        values = {**self.base_set, **(extra or {}), **(overrides or {})}
        if seed is not None:
            values[SEED_KEY] = seed
        return build_config(self.preset, values)

    def grid_points(self) -> list[Point]:
        """Every grid trial: variants × grid values × seeds, in file order, seeds innermost."""
        rows = self._rows()
        return [
            Point(index=i * len(self.seeds) + j, label=label, overrides=overrides, seed=seed)
            for i, (label, overrides) in enumerate(rows)
            for j, seed in enumerate(self.seeds)
        ]

    def _rows(self) -> list[tuple[str, dict[str, Any]]]:
        variants = self.variants or (Variant("", {}),)
        keys = list(self.grid)
        rows = []
        for variant in variants:
            for values in itertools.product(*(self.grid[k] for k in keys)):
                grid_values = dict(zip(keys, values))
                rows.append((row_label(variant.name, grid_values), {**variant.overrides, **grid_values}))
        return rows

    def row_labels(self) -> list[str]:
        """The distinct row labels in sweep order (grid); empty for Optuna."""
        return [label for label, _ in self._rows()] if self.kind == "grid" else []

    def truncated(self, max_trials: int) -> SearchSpace:
        """A copy with at most ``max_trials`` trials (smoke runs): the first seed, the first rows or samples."""
        out = dataclasses.replace(self, seeds=self.seeds[:1], num_samples=min(self.num_samples, max_trials))
        if self.kind == "grid":
            if self.variants:
                out.variants = self.variants[:max_trials]
                out.grid = {k: v[:1] for k, v in self.grid.items()}
            else:
                first = next(iter(self.grid))
                out.grid = {k: v[:max_trials] if k == first else v[:1] for k, v in self.grid.items()}
        return out

    def trial_count(self) -> int:
        return len(self.grid_points()) if self.kind == "grid" else self.num_samples

    def axis_keys(self) -> list[str]:
        """The config keys the sweep varies (what the report shows per row)."""
        if self.kind == "optuna":
            return list(self.search)
        keys = list(dict.fromkeys(k for v in self.variants for k in v.overrides))
        return keys + [k for k in self.grid if k not in keys]


def row_label(variant: str, grid_values: Mapping[str, Any]) -> str:
    """Variant name, the bare value of a one-key grid, or ``key=value, ...``; joined by ``, ``."""
    if len(grid_values) == 1 and not variant:
        return format_value(next(iter(grid_values.values())))
    parts = [variant] if variant else []
    parts += [f"{k}={format_value(v)}" for k, v in grid_values.items()]
    return ", ".join(parts)


def format_value(value: Any) -> str:
    """``64``, ``0.9``, ``0`` (floats without trailing zeros), lists as ``[1, 0.5]``."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


# --- loading --------------------------------------------------------------------------------------------
def load_space(path: str | Path, extra: Mapping[str, Any] | None = None) -> SearchSpace:
    """Reads and checks a search-space YAML file (see the module docstring).

    Args:
        path: the YAML file.
        extra: command-line overrides every trial will get (checked with the space's own).

    Raises:
        SpaceError: anything wrong with the file, naming the key.
    """
    from toco_ray.tuning.checks import check_paper_rows, check_space  # they build on this module's types

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
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: expected a mapping with at least `base` and `kind`")
    try:
        space = parse_space(data, name=path.stem, path=str(path), text=text)
        check_paper_rows(space)
        check_space(space, extra)
    except SpaceError as err:
        raise SpaceError(f"{path}: {err}") from None
    return space


def parse_space(data: dict[str, Any], name: str, path: str = "", text: str = "") -> SearchSpace:
    """Builds a :class:`SearchSpace` from the parsed YAML, checking its structure (not yet the configs)."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(TOP_KEYS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; expected some of {sorted(TOP_KEYS)}"
        raise SpaceError(f"unknown key {unknown[0]!r}{hint}")
    kind = _choice(data, "kind", KINDS, required=True)
    wrong = [k for k in (OPTUNA_ONLY if kind == "grid" else GRID_ONLY) if k in data]
    if wrong:
        raise SpaceError(f"key {wrong[0]!r} does not apply to kind: {kind}")
    preset, base_set = _parse_base(data.get("base"))
    space = SearchSpace(
        name=name, path=path, text=text, preset=preset, base_set=base_set, kind=kind,
        metric=_choice(data, "metric", METRICS, default="seg_miou"),
        mode=_choice(data, "mode", MODES, default="max"),
        description=str(data.get("description", "")),
        seeds=_parse_seeds(data.get("seeds", [0])),
        constraints=_parse_constraints(data.get("constraints", [])),
        asha=_parse_asha(data.get("asha")),
        paper=_parse_paper(data.get("paper")),
    )
    if kind == "grid":
        space.variants = _parse_variants(data.get("variants", []))
        space.grid = _parse_grid(data.get("grid", {}))
        if not space.variants and not space.grid:
            raise SpaceError("kind: grid needs `grid` or `variants` (nothing to sweep)")
    else:
        space.search = _parse_search(data.get("search"))
        space.num_samples = _positive_int(data.get("num_samples", 1), "num_samples")
        space.points_to_evaluate = _parse_points(data.get("points_to_evaluate", []), space.search)
        if len(space.seeds) != 1:
            raise SpaceError(f"seeds: an Optuna sweep trains each sampled point once; give one seed, got {space.seeds}")
    return space


def _choice(data: dict, key: str, allowed: Sequence[str], default: str = "", required: bool = False) -> str:
    if key not in data:
        if required:
            raise SpaceError(f"missing key {key!r} (one of {list(allowed)})")
        return default
    value = data[key]
    if value not in allowed:
        raise SpaceError(f"key {key!r} is {value!r}; expected one of {list(allowed)}")
    return value


def _parse_base(base: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(base, dict):
        raise SpaceError("missing key 'base' (a mapping with `preset` and optional `set`)")
    unknown = sorted(set(base) - {"preset", "set"})
    if unknown:
        raise SpaceError(f"unknown key 'base.{unknown[0]}'; expected base.preset and base.set")
    preset = base.get("preset", "voc")
    if preset not in PRESETS:
        raise SpaceError(f"key 'base.preset' is {preset!r}; expected one of {sorted(PRESETS)}")
    overrides = _mapping(base.get("set", {}), "base.set")
    if SEED_KEY in overrides:
        raise SpaceError(f"key 'base.set.{SEED_KEY}': seeds come from the top-level `seeds` list")
    return preset, overrides


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"key {where!r} must be a mapping of dotted config keys, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _parse_seeds(seeds: Any) -> tuple[int, ...]:
    if not isinstance(seeds, list) or not seeds:
        raise SpaceError(f"key 'seeds' must be a non-empty list of integers, got {seeds!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SpaceError(f"key 'seeds' must hold integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise SpaceError(f"key 'seeds' repeats a seed: {seeds!r}")
    return tuple(seeds)


def _positive_int(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SpaceError(f"key {key!r} must be a positive integer, got {value!r}")
    return value


def _parse_variants(variants: Any) -> tuple[Variant, ...]:
    if not isinstance(variants, list):
        raise SpaceError("key 'variants' must be a list of {name, set} mappings")
    out, seen = [], set()
    for i, item in enumerate(variants):
        where = f"variants[{i}]"
        if not isinstance(item, dict) or "name" not in item:
            raise SpaceError(f"key {where!r} must be a mapping with `name` and `set`")
        unknown = sorted(set(item) - {"name", "set"})
        if unknown:
            raise SpaceError(f"unknown key '{where}.{unknown[0]}'; expected name and set")
        name = str(item["name"])
        if name in seen:
            raise SpaceError(f"key '{where}.name': variant {name!r} appears twice")
        seen.add(name)
        overrides = _mapping(item.get("set", {}), f"{where}.set")
        if SEED_KEY in overrides:
            raise SpaceError(f"key '{where}.set.{SEED_KEY}': seeds come from the top-level `seeds` list")
        out.append(Variant(name, overrides))
    return tuple(out)


def _parse_grid(grid: Any) -> dict[str, tuple[Any, ...]]:
    grid = _mapping(grid, "grid")
    out = {}
    for key, values in grid.items():
        if key == SEED_KEY:
            raise SpaceError(f"key 'grid.{SEED_KEY}': seeds come from the top-level `seeds` list")
        if not isinstance(values, list):
            raise SpaceError(f"key 'grid.{key}' must be a list of values, got {values!r}")
        if not values:
            raise SpaceError(f"key 'grid.{key}' is an empty grid (give at least one value)")
        if len({format_value(v) for v in values}) != len(values):
            raise SpaceError(f"key 'grid.{key}' repeats a value: {values!r}")
        out[key] = tuple(values)
    return out


def _parse_search(search: Any) -> dict[str, Param]:
    search = _mapping(search, "search")
    if not search:
        raise SpaceError("kind: optuna needs a non-empty `search` mapping (dotted key → range)")
    return {key: _parse_param(key, spec) for key, spec in search.items()}


def _parse_param(key: str, spec: Any) -> Param:
    where = f"search.{key}"
    if key == SEED_KEY:
        raise SpaceError(f"key {where!r}: seeds come from the top-level `seeds` list")
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpaceError(f"key {where!r} must be a mapping with `type` ({', '.join(PARAM_TYPES)})")
    kind = spec["type"]
    if kind not in PARAM_TYPES:
        raise SpaceError(f"key '{where}.type' is {kind!r}; expected one of {list(PARAM_TYPES)}")
    allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "step"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise SpaceError(f"unknown key '{where}.{unknown[0]}' for type {kind}; expected {sorted(allowed)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SpaceError(f"key '{where}.choices' must be a non-empty list")
        return Param(key, kind, choices=tuple(choices))
    low, high = spec.get("low"), spec.get("high")
    for end, value in (("low", low), ("high", high)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SpaceError(f"key '{where}.{end}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise SpaceError(f"key '{where}.{end}' must be a finite number, got {value}")
        if kind == "int" and not isinstance(value, int):
            raise SpaceError(f"key '{where}.{end}' must be an integer for type int, got {value!r}")
    if not low < high:
        raise SpaceError(f"key {where!r}: low ({low}) must be below high ({high})")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"key '{where}.low' must be positive for type loguniform, got {low}")
    step = spec.get("step")
    if step is not None and (kind == "loguniform" or not isinstance(step, (int, float)) or step <= 0):
        raise SpaceError(f"key '{where}.step' must be a positive number (not for loguniform), got {step!r}")
    if step is not None and kind == "int" and not isinstance(step, int):
        raise SpaceError(f"key '{where}.step' must be an integer for type int, got {step!r}")
    return Param(key, kind, low=low, high=high, step=step)


def _parse_points(points: Any, search: dict[str, Param]) -> tuple[dict[str, Any], ...]:
    if not isinstance(points, list):
        raise SpaceError("key 'points_to_evaluate' must be a list of mappings")
    out = []
    for i, point in enumerate(points):
        where = f"points_to_evaluate[{i}]"
        point = _mapping(point, where)
        extra = sorted(set(point) - set(search))
        missing = sorted(set(search) - set(point))
        if extra:
            raise SpaceError(f"key '{where}.{extra[0]}' is not in `search`")
        if missing:
            raise SpaceError(f"key {where!r} misses {missing[0]!r} (a point gives every searched key)")
        for key, value in point.items():
            if not _in_range(search[key], value):
                raise SpaceError(f"key '{where}.{key}' = {value!r} is outside search.{key}")
        out.append(point)
    return tuple(out)


def _in_range(param: Param, value: Any) -> bool:
    if param.type == "categorical":
        return value in param.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high


def _parse_constraints(items: Any) -> tuple[Constraint, ...]:
    if not isinstance(items, list):
        raise SpaceError("key 'constraints' must be a list of strings like 'cam.low_thre < cam.high_thre'")
    out = []
    for text in [*IMPLICIT_CONSTRAINTS, *items]:
        match = CONSTRAINT_PATTERN.match(str(text))
        if not match:
            raise SpaceError(f"constraint {text!r} is not of the form 'key < key' (e.g. cam.low_thre < cam.high_thre)")
        constraint = Constraint(match.group(1), match.group(2))
        if constraint not in out:
            out.append(constraint)
    return tuple(out)


def _parse_asha(asha: Any) -> Asha | None:
    if asha is None:
        return None
    if not isinstance(asha, dict):
        raise SpaceError("key 'asha' must be a mapping with `grace_iters` (and optional `reduction_factor`)")
    unknown = sorted(set(asha) - {"grace_iters", "reduction_factor"})
    if unknown:
        raise SpaceError(f"unknown key 'asha.{unknown[0]}'; expected grace_iters and reduction_factor")
    grace = asha.get("grace_iters")
    if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
        raise SpaceError(f"key 'asha.grace_iters' must be a non-negative integer, got {grace!r}")
    factor = asha.get("reduction_factor", DEFAULT_ASHA_REDUCTION)
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 1:
        raise SpaceError(f"key 'asha.reduction_factor' must be a number above 1, got {factor!r}")
    return Asha(grace, float(factor))


def _parse_paper(ref: Any) -> PaperRef | None:
    if ref is None:
        return None
    if not isinstance(ref, dict) or "table" not in ref:
        raise SpaceError(f"key 'paper' must be a mapping with `table` (one of {sorted(paper.TABLES)})")
    unknown = sorted(set(ref) - {"table", "rows"})
    if unknown:
        raise SpaceError(f"unknown key 'paper.{unknown[0]}'; expected table and rows")
    table = str(ref["table"])
    if table not in paper.TABLES:
        raise SpaceError(f"key 'paper.table' is {table!r}; expected one of {sorted(paper.TABLES)}")
    rows = {format_value(k): str(v) for k, v in _mapping(ref.get("rows", {}), "paper.rows").items()}
    unknown_rows = sorted(set(rows.values()) - set(paper.TABLES[table]))
    if unknown_rows:
        raise SpaceError(f"key 'paper.rows': table {table} has no row {unknown_rows[0]!r} "
                         f"(rows: {list(paper.TABLES[table])})")
    return PaperRef(table, rows)
