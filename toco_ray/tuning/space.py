"""Search spaces: a YAML file describing a sweep as a small diff from a preset; the models below are its schema.

A search space is data; it runs nothing. ``kind`` says which schema applies (:class:`GridSpace` or
:class:`OptunaSpace`, both :class:`SearchSpace`); every mapping refuses keys it does not define, numbers are taken as
written (``80.5`` is not an integer, ``true`` is not a number, ``.inf`` is not a bound), and an error names the key
path (``search.cam.high_thre.low``). An example of each kind, every key but ``base`` and ``kind`` optional::

    description: one line shown in reports
    base:
      preset: synthetic             # toco_ray.config preset the sweep starts from (voc | coco | synthetic ...)
      set: {schedule.max_iters: 90} # dotted-key overrides applied to every trial
    kind: grid
    metric: cam_miou                # what Tune/ASHA/Optuna read: seg_miou (default) | cam_miou | aux_cam_miou
    mode: max                       # max | min
    seeds: [0, 1, 2]                # train.seed of the trials: a grid runs every point once per seed
    variants:                       # named override sets (e.g. the rows of Table 4), crossed with `grid`
      - {name: "+PTC", set: {loss.w_ptc: 0.2, loss.w_ctc: 0.0}}
    grid:                           # dotted key → the values to try (the cartesian product is run)
      ctc.local_crop_size: [64, 80, 96, 112]
    asha: {grace_iters: 60, reduction_factor: 2}    # ASHA on `metric`; a trial may be stopped only after
                                                    # schedule.seg_start_iter + grace_iters iterations
    paper: {table: "5b", rows: {64: "64"}}          # the paper's numbers beside ours (toco_ray/tuning/paper.py;
                                                    # rows: our row label → the paper's)

    base: {preset: voc}
    kind: optuna
    seeds: [0]                      # one seed: it trains every trial and seeds the TPE sampler
    num_samples: 20                 # Optuna trials
    search:                         # dotted key → a range: float | loguniform | int (low, high, step) or categorical
      cam.high_thre: {type: float, low: 0.55, high: 0.85}
      loss.w_ptc: {type: loguniform, low: 0.05, high: 1.0}
      ctc.local_crop_size: {type: int, low: 64, high: 112, step: 16}
      model.aux_layer: {type: categorical, choices: [7, 8, 9, 10]}
    constraints: ["cam.low_thre < cam.high_thre"]   # enforced while sampling (grid: checked on every point)
    points_to_evaluate: [{cam.high_thre: 0.7, ...}] # full points, run first (e.g. the paper's setting)

This module checks the file's structure; :func:`toco_ray.tuning.checks.load_space` reads a file, then builds the
config of every point, both ends of every range and every choice, and checks constraints (β_l < β_h always
applies: it defines the band of uncertain tokens), ``model.aux_layer`` against the backbone, the ASHA grace period
against the schedule and the paper rows against the grid, before any trial starts.

Row labels: a variant's name, or for a one-key grid the value (``64``, ``0.9``), or ``key=value, ...``.

Example:
    >>> space = load_space("search_spaces/table5b_crop_size.yaml")      # toco_ray.tuning.load_space
    >>> [p.label for p in space.grid_points()][:2]
    ['64', '64']
    >>> space.trial_count()
    12
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from toco_ray.config import PRESETS, ToCoConfig, build_config
from toco_ray.errors import TocoError
from toco_ray.metric_names import KINDS, report_key
from toco_ray.tuning import paper

METRICS = tuple(report_key(kind) for kind in KINDS)  # what `metric` may name: the keys each evaluation reports
SEED_KEY = "train.seed"
# β_l < β_h is what makes the band of uncertain tokens (SPEC §2): every space obeys it, stated or not.
IMPLICIT_CONSTRAINTS = ("cam.low_thre < cam.high_thre",)
CONSTRAINT_PATTERN = re.compile(r"^\s*([\w.]+)\s*<\s*([\w.]+)\s*$")


class SpaceError(TocoError, ValueError):
    """A search space is invalid; the message names the file and the key."""


# --- building blocks -------------------------------------------------------------------------------------------
def invalid(message: str, at: str = "", kind: str = "key") -> PydanticCustomError:
    """A schema error, worded by :func:`describe_error` as ``key '<path><at>' <message>`` (kind ``key``),
    ``key '<path><at>': <message>`` (``note``), or ``message`` alone when it names its keys itself (``whole``).
    ``at`` extends the path the error is raised at (a model's own checks are raised at the model)."""
    return PydanticCustomError(kind, message, {"subkey": at})


def _not_seed(key: str) -> str:
    if key == SEED_KEY:
        raise invalid("seeds come from the top-level `seeds` list", kind="note")
    return key


def _name_text(value: Any) -> Any:
    """A row name as written: YAML reads a name like 64 as a number (taken as its text), and ``off``, ``on``,
    ``yes``, ``no`` as booleans (refused: their text is lost)."""
    if isinstance(value, bool):
        raise invalid("YAML reads off, on, yes and no as true/false: quote the name ('off')", kind="note")
    return str(value) if isinstance(value, (int, float)) else value


def _unique(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if len({format_value(v) for v in values}) != len(values):
        raise invalid(f"repeats a value: {list(values)!r}")
    return values


def _grid_values(values: tuple[Any, ...]) -> tuple[Any, ...]:
    if not values:
        raise invalid("is an empty grid (give at least one value)")
    return _unique(values)


ConfigKey = Annotated[str, AfterValidator(_not_seed)]  # a dotted config key other than the seed
Overrides = dict[ConfigKey, Any]
Number = Annotated[float, Strict(), AllowInfNan(False)]  # ints are taken; bools, strings, inf and nan are not
Integer = Annotated[int, Strict()]
RowLabel = Annotated[str, BeforeValidator(lambda label: format_value(label))]  # YAML reads `64:` as a number


class Schema(BaseModel):
    """A mapping of the file: unknown keys are errors, and a loaded space does not change."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class Base(Schema):
    """The preset every trial starts from and the overrides applied to every trial."""

    preset: Literal[tuple(PRESETS)] = "voc"
    overrides: Overrides = Field(default_factory=dict, alias="set")


class Variant(Schema):
    """A named set of overrides (a row of an ablation table)."""

    name: Annotated[str, BeforeValidator(_name_text)]
    overrides: Overrides = Field(default_factory=dict, alias="set")


class Constraint(Schema):
    """``lower < upper`` between two config keys, written as the string ``"lower < upper"``."""

    lower: str
    upper: str

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, text: Any) -> Any:
        match = CONSTRAINT_PATTERN.match(text) if isinstance(text, str) else None
        if not match:
            raise invalid(f"is {text!r}, not of the form 'key < key' (e.g. cam.low_thre < cam.high_thre)")
        return {"lower": match.group(1), "upper": match.group(2)}

    def __str__(self) -> str:
        return f"{self.lower} < {self.upper}"

    def holds(self, values: Mapping[str, Any]) -> bool:
        return values[self.lower] < values[self.upper]


class Asha(Schema):
    """ASHA early stopping on the space's metric, measured in training iterations."""

    grace_iters: Annotated[Integer, Field(ge=0)]
    reduction_factor: Annotated[Number, Field(gt=1)] = 2.0

    def grace_period(self, cfg: ToCoConfig) -> int:
        """Iterations before a trial may be stopped: the seg loss's switch-on plus ``grace_iters``."""
        return cfg.schedule.seg_start_iter + self.grace_iters


class PaperRef(Schema):
    """Which of the paper's tables the results sit beside, and our row label → the paper's row label."""

    table: Annotated[Literal[tuple(paper.TABLES)], BeforeValidator(str)]  # `table: 4` is the table "4"
    rows: dict[RowLabel, Annotated[str, BeforeValidator(str)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_rows(self) -> PaperRef:
        unknown = sorted(set(self.rows.values()) - set(paper.TABLES[self.table]))
        if unknown:
            raise invalid(f"table {self.table} has no row {unknown[0]!r} (rows: {list(paper.TABLES[self.table])})",
                          at="rows", kind="note")
        return self

    def row_for(self, label: str) -> str:
        return self.rows.get(label, label)


# --- Optuna dimensions ------------------------------------------------------------------------------------------
class Param(Schema):
    """One Optuna dimension; ``key`` is the config key it sets (the key it is listed under in ``search``)."""

    _key: str = PrivateAttr("")

    @property
    def key(self) -> str:
        return self._key

    @property
    def numeric(self) -> bool:
        return self.type != "categorical"

    def ends(self) -> tuple[Any, ...]:
        """The values whose configs are built at load time: both ends of a range, every choice."""
        return self.choices if self.type == "categorical" else (self.low, self.high)

    @model_validator(mode="after")
    def _ordered(self) -> Param:
        if self.numeric and not self.low < self.high:
            raise invalid(f"low ({self.low}) must be below high ({self.high})", kind="note")
        return self


class FloatParam(Param):
    """Uniform over ``low``..``high`` (on a grid of ``step`` from ``low`` when given)."""

    type: Literal["float"]
    low: Number
    high: Number
    step: Annotated[Number, Field(gt=0)] | None = None


class LogUniformParam(Param):
    """Log-uniform over ``low``..``high``, both positive."""

    type: Literal["loguniform"]
    low: Annotated[Number, Field(gt=0)]
    high: Number

    @property
    def step(self) -> None:  # no grid on a log scale
        return None


class IntParam(Param):
    """Integers ``low``..``high`` (every ``step``-th from ``low``)."""

    type: Literal["int"]
    low: Integer
    high: Integer
    step: Annotated[Integer, Field(gt=0)] | None = None


class CategoricalParam(Param):
    """One of ``choices``."""

    type: Literal["categorical"]
    choices: Annotated[tuple[Any, ...], Field(min_length=1)]


AnyParam = Annotated[FloatParam | LogUniformParam | IntParam | CategoricalParam, Field(discriminator="type")]


# --- the two kinds of space -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceSource:
    """Where a space came from: its name (the file's stem), path and text."""

    name: str = ""
    path: str = ""
    text: str = ""


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
        return f"p{self.index:02d}-{label_slug(self.label)}-s{self.seed}"

    @property
    def title(self) -> str:
        """The name a person reads in MLflow's runs table, what differs first: ``+PTC s0 · p02``."""
        return f"{self.label} s{self.seed} · p{self.index:02d}"


class SearchSpace(Schema):
    """What both kinds share: the preset and overrides, the metric, the seeds, constraints, ASHA, the paper."""

    kind: str
    description: str = ""
    base: Base
    metric: Literal[METRICS] = report_key("seg")
    mode: Literal["max", "min"] = "max"
    seeds: Annotated[tuple[Integer, ...], Field(min_length=1), AfterValidator(_unique)] = (0,)
    constraints: tuple[Constraint, ...] = Field(default=(), validate_default=True)  # IMPLICIT_CONSTRAINTS first
    asha: Asha | None = None
    paper: PaperRef | None = None
    _source: SpaceSource = PrivateAttr(default_factory=SpaceSource)

    @field_validator("constraints")
    @classmethod
    def _with_implicit(cls, constraints: tuple[Constraint, ...]) -> tuple[Constraint, ...]:
        implicit = tuple(Constraint.model_validate(text) for text in IMPLICIT_CONSTRAINTS)
        return tuple(dict.fromkeys(implicit + constraints))

    @property
    def name(self) -> str:
        return self._source.name

    @property
    def path(self) -> str:
        return self._source.path

    @property
    def text(self) -> str:
        return self._source.text

    @property
    def digest(self) -> str:
        """SHA-256 of the file's text: a resumed sweep must run the space it started with."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def preset(self) -> str:
        return self.base.preset

    @property
    def base_set(self) -> dict[str, Any]:
        return dict(self.base.overrides)

    def config(self, overrides: Mapping[str, Any] | None = None, seed: int | None = None,
               extra: Mapping[str, Any] | None = None) -> ToCoConfig:
        """The trial config: preset, then ``base.set``, then ``extra`` (command line), ``overrides``, the seed."""
        values = {**self.base.overrides, **(extra or {}), **(overrides or {})}
        if seed is not None:
            values[SEED_KEY] = seed
        return build_config(self.base.preset, values)

    def row_labels(self) -> list[str]:
        """The distinct row labels in sweep order (grid); empty for Optuna."""
        return []

    def varied_keys(self) -> list[str]:
        """The config keys whose values differ between trials: the swept keys, and the seed when there are several."""
        return self.axis_keys() + ([SEED_KEY] if len(self.seeds) > 1 else [])

    def with_samples(self, num_samples: int) -> SearchSpace:
        return self


class GridSpace(SearchSpace):
    """Every point of ``variants`` × ``grid`` × ``seeds``."""

    kind: Literal["grid"]
    variants: tuple[Variant, ...] = ()
    grid: dict[ConfigKey, Annotated[tuple[Any, ...], AfterValidator(_grid_values)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something_to_sweep(self) -> GridSpace:
        if not self.variants and not self.grid:
            raise invalid("kind: grid needs `grid` or `variants` (nothing to sweep)", kind="whole")
        names = [v.name for v in self.variants]
        twice = next((i for i, name in enumerate(names) if name in names[:i]), None)
        if twice is not None:
            raise invalid(f"variant {names[twice]!r} appears twice", at=f"variants[{twice}].name", kind="note")
        return self

    def grid_points(self) -> list[Point]:
        """Every grid trial: variants × grid values × seeds, in file order, seeds innermost."""
        return [
            Point(index=i * len(self.seeds) + j, label=label, overrides=overrides, seed=seed)
            for i, (label, overrides) in enumerate(self._rows())
            for j, seed in enumerate(self.seeds)
        ]

    def _rows(self) -> list[tuple[str, dict[str, Any]]]:
        variants = self.variants or (Variant(name=""),)
        keys = list(self.grid)
        rows = []
        for variant in variants:
            for values in itertools.product(*(self.grid[k] for k in keys)):
                grid_values = dict(zip(keys, values))
                rows.append((row_label(variant.name, grid_values), {**variant.overrides, **grid_values}))
        return rows

    def row_labels(self) -> list[str]:
        return [label for label, _ in self._rows()]

    def truncated(self, max_trials: int) -> GridSpace:
        """A copy with at most ``max_trials`` trials (smoke runs): the first seed, the first rows."""
        if self.variants:
            update = {"variants": self.variants[:max_trials], "grid": {k: v[:1] for k, v in self.grid.items()}}
        else:
            first = next(iter(self.grid))
            update = {"grid": {k: v[:max_trials] if k == first else v[:1] for k, v in self.grid.items()}}
        return self.model_copy(update={"seeds": self.seeds[:1], **update})

    def trial_count(self) -> int:
        return len(self.grid_points())

    def axis_keys(self) -> list[str]:
        """The config keys the sweep varies (what the report shows per row)."""
        keys = list(dict.fromkeys(k for v in self.variants for k in v.overrides))
        return keys + [k for k in self.grid if k not in keys]


class OptunaSpace(SearchSpace):
    """``num_samples`` points drawn by Optuna's TPE from ``search``, ``points_to_evaluate`` first."""

    kind: Literal["optuna"]
    num_samples: Annotated[Integer, Field(ge=1)] = 1
    search: dict[ConfigKey, AnyParam]
    points_to_evaluate: tuple[dict[str, Any], ...] = ()

    @field_validator("search")
    @classmethod
    def _keyed(cls, search: dict[str, Param]) -> dict[str, Param]:
        if not search:
            raise invalid("kind: optuna needs a non-empty `search` mapping (dotted key → range)", kind="whole")
        for key, param in search.items():
            param._key = key  # a private attribute: the file cannot set it
        return search

    @model_validator(mode="after")
    def _one_seed_and_full_points(self) -> OptunaSpace:
        if len(self.seeds) != 1:
            seeds = list(self.seeds)
            raise invalid(f"seeds: an Optuna sweep trains each sampled point once; give one seed, got {seeds}",
                          kind="whole")
        for i, point in enumerate(self.points_to_evaluate):
            check_point(point, self.search, f"points_to_evaluate[{i}]")
        return self

    def truncated(self, max_trials: int) -> OptunaSpace:
        """A copy with at most ``max_trials`` samples (smoke runs)."""
        return self.model_copy(update={"num_samples": min(self.num_samples, max_trials)})

    def with_samples(self, num_samples: int) -> OptunaSpace:
        return self.model_copy(update={"num_samples": num_samples})

    def trial_count(self) -> int:
        return self.num_samples

    def axis_keys(self) -> list[str]:
        return list(self.search)


def check_point(point: Mapping[str, Any], search: Mapping[str, Param], where: str) -> None:
    """A point to evaluate gives every searched key a value inside its range."""
    extra, missing = sorted(set(point) - set(search)), sorted(set(search) - set(point))
    if extra:
        raise invalid(f"key '{where}.{extra[0]}' is not in `search`", kind="whole")
    if missing:
        raise invalid(f"key '{where}' misses {missing[0]!r} (a point gives every searched key)", kind="whole")
    for key, value in point.items():
        if not in_range(search[key], value):
            raise invalid(f"key '{where}.{key}' = {value!r} is outside search.{key}", kind="whole")


def in_range(param: Param, value: Any) -> bool:
    if param.type == "categorical":
        return value in param.choices
    return isinstance(value, (int, float)) and not isinstance(value, bool) and param.low <= value <= param.high


KINDS_OF_SPACE = {"grid": GridSpace, "optuna": OptunaSpace}
SPACE_SCHEMA = TypeAdapter(Annotated[GridSpace | OptunaSpace, Field(discriminator="kind")])


# --- reading a parsed file --------------------------------------------------------------------------------------
def parse_space(data: Any, name: str, path: str = "", text: str = "") -> SearchSpace:
    """The :class:`GridSpace` or :class:`OptunaSpace` that parsed YAML describes, its structure checked (the
    configs it builds are checked by :func:`~toco_ray.tuning.checks.load_space`).

    Raises:
        SpaceError: naming the first wrong key (an unknown key before any other problem).
    """
    if not isinstance(data, dict):
        raise SpaceError(f"the top level must be a mapping with at least the keys `base` and `kind`, got "
                         f"{type(data).__name__} {data!r}"[:200])
    try:
        space = SPACE_SCHEMA.validate_python(data)
    except ValidationError as err:
        errors = err.errors()
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise SpaceError(describe_error(first)) from None
    space._source = SpaceSource(name, path, text)  # a private attribute: the file cannot set it
    return space


EXPECTED = {  # how an error type of the schema says what a value must be
    "int_type": "an integer", "int_from_float": "an integer", "int_parsing": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "string_type": "a string", "bool_type": "true or false", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping", "list_type": "a list", "tuple_type": "a list",
}
TAGS = {"kind": list(KINDS_OF_SPACE), "type": ["float", "loguniform", "int", "categorical"]}
MISSING = {"base": " (a mapping with `preset` and optional `set`)", "grace_iters": " (iterations after the seg start)"}


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error of the schema as one line naming the key path (``key 'search.x.high' must be ...``)."""
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    where, model = locate(error["loc"])
    where = join_key(where, ctx.get("subkey", ""))
    if kind == "whole":
        return error["msg"]
    if kind in ("key", "note"):
        return f"key {where!r}{':' if kind == 'note' else ''} {error['msg']}" if where else error["msg"]
    if kind == "extra_forbidden":
        return unknown_key(error["loc"])
    if kind in ("union_tag_not_found", "union_tag_invalid"):
        tag = ctx["discriminator"].strip("'")
        if kind == "union_tag_not_found":
            return f"missing key {join_key(where, tag)!r} (one of {TAGS[tag]})"
        return f"key {join_key(where, tag)!r} is {ctx['tag']!r}; expected one of {TAGS[tag]}"
    if kind == "missing":
        return f"missing key {where!r}{MISSING.get(where.rpartition('.')[2], '')}"
    if kind == "literal_error":
        return f"key {where!r} is {value!r}; expected {ctx['expected']}"
    if kind in EXPECTED:
        return f"key {where!r} must be {EXPECTED[kind]}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal"):
        bound = f"above {ctx['gt']}" if kind == "greater_than" else f"at least {ctx['ge']}"
        return f"key {where!r} must be {bound}, got {value!r}"
    if kind == "too_short":
        return f"key {where!r} must not be empty"
    return f"key {where!r}: {error['msg']}"


def unknown_key(loc: Sequence[Any]) -> str:
    """``unknown key 'grdi' (did you mean 'grid'?)``, or that a key belongs to the other kind of space."""
    where, model = locate(loc[:-1])
    key = str(loc[-1])
    other = [k for k, cls in KINDS_OF_SPACE.items() if cls is not model and key in cls.model_fields]
    if not where and model in KINDS_OF_SPACE.values() and other:
        return f"key {key!r} does not apply to kind: {model.model_fields['kind'].annotation.__args__[0]}"
    allowed = sorted(f.alias or name for name, f in model.model_fields.items()) if model else []
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; expected some of {allowed}"
    of_type = f" for type {_tag(model)}" if model and issubclass(model, Param) else ""
    return f"unknown key {join_key(where, key)!r}{of_type}{hint}"


def locate(loc: Sequence[Any]) -> tuple[str, type[BaseModel] | None]:
    """The key path of a pydantic error location, without the tags pydantic puts in for the tagged unions
    (``('grid', 'base', 'set', 'x', '[key]')`` → ``base.set.x``), and the schema model the path ends in."""
    path, node = "", SPACE_SCHEMA._type
    for item in loc:
        node = _unwrap(node)
        if isinstance(node, list):  # a tagged union: this item is the tag
            node = next((m for m in node if _tag(m) == item), None)
        elif isinstance(node, type) and issubclass(node, BaseModel):
            field = next((f for name, f in node.model_fields.items() if item in (name, f.alias)), None)
            path, node = join_key(path, str(item)), field.annotation if field else None
        elif item != "[key]":  # inside a mapping (a config key) or a list (an index)
            path = join_key(path, f"[{item}]" if isinstance(item, int) else str(item))
            args = [a for a in typing.get_args(node) if a is not Ellipsis]  # dict[K, V] → V, tuple[X, ...] → X
            node = args[-1] if args else None
    node = _unwrap(node)
    return path, node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _unwrap(node: Any) -> Any:
    """Annotated[X, ...] → X, Optional[X] → X; a union of models → the list of them."""
    while typing.get_origin(node) is Annotated:
        node = typing.get_args(node)[0]
    if typing.get_origin(node) in (Union, types.UnionType):
        members = [m for m in typing.get_args(node) if m is not type(None)]
        return members[0] if len(members) == 1 else [_unwrap(m) for m in members]
    return node


def _tag(model: Any) -> Any:
    for name in ("kind", "type"):
        field = getattr(model, "model_fields", {}).get(name)
        if field is not None and typing.get_origin(field.annotation) is Literal:
            return typing.get_args(field.annotation)[0]
    return None


def join_key(path: str, key: str) -> str:
    """``search`` + ``x`` → ``search.x``; ``variants`` + ``[0]`` → ``variants[0]``."""
    if not key:
        return path
    return f"{path}{key}" if key.startswith("[") or not path else f"{path}.{key}"


# --- row labels -------------------------------------------------------------------------------------------------
def label_slug(label: str) -> str:
    """A row label in lower-case letters, digits and underscores (at most 40): ``+L_cls^m`` → ``l_cls_m``."""
    return (re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower() or "point")[:40]


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
