"""Search spaces: the shipped ones load and mean what the paper's tables mean; bad ones fail naming the key."""

import pytest
from space_files import SPACES, write

from toco_ray.config import flatten
from toco_ray.tuning import SpaceError, load_space, paper

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("name", "trials", "rows"),
    [
        # 2 variants × 3 seeds
        ("quick_demo", 6, ["+L_cls^m", "+PTC"]),
        # Table 4's six rows × 3 seeds = 18
        ("table4_modules", 18, ["L_cls", "+L_cls^m", "+PTC", "+CTC", "+L_seg", "+L_reg"]),
        ("synthetic_table4", 18, ["L_cls", "+L_cls^m", "+PTC", "+CTC", "+L_seg", "+L_reg"]),
        # four values × 3 seeds = 12 each
        ("table5a_aux_block", 12, ["7", "8", "9", "10"]),
        ("table5b_crop_size", 12, ["64", "80", "96", "112"]),
        ("table5c_momentum", 12, ["0", "0.1", "0.9", "0.99"]),
        ("toco_hpo", 40, []),
        # fixed, reference and each of the five switches alone × 3 seeds = 21
        ("compat_ablation", 21, ["fixed", "reference", "ref PTC box", "ref box before flip", "ref local view flip",
                                 "ref x0 terms", "ref energy scale"]),
    ],
)
def test_shipped_spaces_load_with_their_trial_counts_and_rows(name, trials, rows):
    space = load_space(SPACES / f"{name}.yaml")
    assert space.trial_count() == trials
    assert space.row_labels() == rows
    if space.paper is not None:  # every row sits beside a row of the paper's table
        assert {space.paper.row_for(r) for r in rows} <= set(paper.TABLES[space.paper.table])


def test_compat_ablation_rows_put_back_one_reference_behaviour_each():
    from dataclasses import fields

    from toco_ray.config import CompatConfig

    space = load_space(SPACES / "compat_ablation.yaml")
    switches = [f.name for f in fields(CompatConfig) if f.name != "reference"]
    on = {}
    for point in space.grid_points()[:: len(space.seeds)]:
        compat = space.config(point.overrides, point.seed).compat
        on[point.label] = sorted(name for name in switches if compat.on(name))
    assert on.pop("fixed") == [] and on.pop("reference") == sorted(switches)
    assert sorted(name for names in on.values() for name in names) == sorted(switches)  # each alone, once
    assert all(len(names) == 1 for names in on.values())


def test_table4_rows_switch_the_loss_terms_on_one_at_a_time():
    space = load_space(SPACES / "table4_modules.yaml")
    weights = ("loss.w_cls_aux", "loss.w_ptc", "loss.w_ctc", "loss.w_seg", "loss.w_reg")
    on = {}
    for point in space.grid_points()[:: len(space.seeds)]:
        values = flatten(space.config(point.overrides, point.seed))
        on[point.label] = [values[w] > 0 for w in weights]
    assert on == {
        "L_cls": [False, False, False, False, False],
        "+L_cls^m": [True, False, False, False, False],
        "+PTC": [True, True, False, False, False],
        "+CTC": [True, True, True, False, False],
        "+L_seg": [True, True, True, True, False],
        "+L_reg": [True, True, True, True, True],
    }
    full = space.config(space.grid_points()[-1].overrides)
    assert (full.loss.w_ptc, full.loss.w_ctc, full.loss.w_seg, full.loss.w_reg) == (0.2, 0.5, 0.1, 0.05)


def test_table5a_indices_are_the_paper_blocks_minus_one():
    space = load_space(SPACES / "table5a_aux_block.yaml")
    # block 10 of 12 (paper default) = index 9 = the config's default -3 (12 - 3 = 9)
    assert space.paper.row_for("9") == "10" and space.config().model.aux_layer % 12 == 9
    assert [space.paper.row_for(r) for r in space.row_labels()] == ["8", "9", "10", "11"]


def test_grid_points_enumerate_rows_then_seeds_with_unique_slugs():
    space = load_space(SPACES / "table5b_crop_size.yaml")
    points = space.grid_points()
    assert [(p.label, p.seed) for p in points[:4]] == [("64", 0), ("64", 1), ("64", 2), ("80", 0)]
    assert points[3].overrides == {"ctc.local_crop_size": 80} and points[3].index == 3
    assert len({p.slug for p in points}) == 12 and points[3].slug == "p03-80-s0"
    small = space.truncated(2)
    assert [(p.label, p.seed) for p in small.grid_points()] == [("64", 0), ("80", 0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("base: {preset: synthetic}\nkind: grid\ngrdi: {loss.w_ptc: [0.1]}\n",
         "unknown key 'grdi' (did you mean 'grid'?)"),
        ("base: {preset: synthetic, set: {loss.w_ptcc: 0.1}}\nkind: grid\ngrid: {loss.w_ptc: [0.1]}\n",
         "base.set: unknown config key 'loss.w_ptcc' (did you mean 'loss.w_ptc'?)"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {ctc.local_crop_sise: [64]}\n",
         "grid.ctc.local_crop_sise: unknown config key 'ctc.local_crop_sise' (did you mean 'ctc.local_crop_size'?)"),
        ("base: {preset: synthetic}\nkind: grid\nvariants: [{name: a, set: {loss.wctc: 0}}]\n",
         "variant 'a': unknown config key 'loss.wctc'"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {loss.w_sg: {type: float, low: 0.1, high: 1}}\n",
         "search.loss.w_sg: unknown config key 'loss.w_sg'"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {loss.w_ptc: []}\n",
         "key 'grid.loss.w_ptc' is an empty grid"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {ctc.local_crop_size: [64, big]}\n",
         "grid.ctc.local_crop_size: config key 'ctc.local_crop_size' expects int, got 'big'"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {ctc.local_crop_size: {type: int, low: 64, high: 96.5}}\n",
         "key 'search.ctc.local_crop_size.high' must be an integer"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {cam.low_thre: [0.2, 0.8]}\n",
         "grid point cam.low_thre=0.8: constraint 'cam.low_thre < cam.high_thre' does not hold"),
        ("base: {preset: synthetic, set: {cam.low_thre: 0.7}}\nkind: grid\ngrid: {loss.w_ptc: [0.1]}\n",
         "constraint 'cam.low_thre < cam.high_thre' does not hold (cam.low_thre = 0.7, cam.high_thre = 0.7)"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch:\n  cam.low_thre: {type: float, low: 0.5, high: 0.9}\n"
         "  cam.high_thre: {type: float, low: 0.4, high: 0.8}\n",
         "search.cam.low_thre.low (0.5) must be below search.cam.high_thre.low (0.4)"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {cam.low_thre: {type: float, low: 0.75, high: 0.9}}\n",
         "constraint 'cam.low_thre < cam.high_thre' can never hold"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {model.aux_layer: [1, 4]}\n",
         "grid.model.aux_layer: config key 'model.aux_layer': model.aux_layer=4 is outside the backbone's 4 blocks"),
        ("base: {preset: synthetic, set: {schedule.seg_start_iter: 200, schedule.max_iters: 600}}\nkind: grid\n"
         "grid: {loss.w_ptc: [0.1]}\nasha: {grace_iters: 500}\n",
         "key 'asha.grace_iters': schedule.seg_start_iter (200) + grace_iters (500) = 700 must be below"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {loss.w_ptc: [0.1]}\nmetric: miou\n",
         "key 'metric' is 'miou'"),
        ("base: {preset: synthetic}\nkind: optuna\nseeds: [0, 1]\n"
         "search: {loss.w_ptc: {type: float, low: 0, high: 1}}\n",
         "seeds: an Optuna sweep trains each sampled point once"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {loss.w_ptc: {type: float, low: 0, high: 1}}\n"
         "points_to_evaluate: [{loss.w_ptc: 2.0}]\n",
         "key 'points_to_evaluate[0].loss.w_ptc' = 2.0 is outside search.loss.w_ptc"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {train.seed: [0, 1]}\n",
         "key 'grid.train.seed': seeds come from the top-level `seeds` list"),
        ("base: {preset: synthetic}\nkind: grid\ngrid: {ctc.local_crop_size: [64]}\n"
         "paper: {table: 5b, rows: {65: '64'}}\n",
         "key 'paper.rows': '65' is not a row of this sweep"),
        ("base: {preset: synthetic}\nkind: grid\n", "kind: grid needs `grid` or `variants`"),
        # a NaN bound, a negative log bound, a key given twice inside `search`, a top level that is not a mapping
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {loss.w_ptc: {type: float, low: .nan, high: 1}}\n",
         "key 'search.loss.w_ptc.low' must be a finite number, got nan"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {loss.w_ptc: {type: loguniform, low: -0.1, high: 1}}\n",
         "key 'search.loss.w_ptc.low' must be above 0.0, got -0.1"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch:\n  loss.w_ptc: {type: float, low: 0.1, high: 1}\n"
         "  loss.w_ptc: {type: float, low: 0.2, high: 1}\n",
         "not valid YAML: found duplicate key 'loss.w_ptc' at line 5, column 3"),
        ("- base: {preset: synthetic}\n- kind: grid\n",
         "the top level must be a mapping with at least the keys `base` and `kind`, got list"),
        # keys of the other kind, and of the other parameter types, name their kind
        ("base: {preset: synthetic}\nkind: optuna\nvariants: [{name: a}]\n"
         "search: {loss.w_ptc: {type: float, low: 0, high: 1}}\n", "key 'variants' does not apply to kind: optuna"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {loss.w_ptc: {type: loguniform, low: 0.1, high: 1, "
         "step: 0.1}}\n", "unknown key 'search.loss.w_ptc.step' for type loguniform"),
        ("base: {preset: synthetic}\nkind: optuna\nsearch: {cam.high_thre: {type: float, low: 0.9, high: 0.4}}\n",
         "key 'search.cam.high_thre': low (0.9) must be below high (0.4)"),
        ("base: {preset: synthetic}\nkind: grid\nseeds: [0, true]\ngrid: {loss.w_ptc: [0.1]}\n",
         "key 'seeds[1]' must be an integer, got True"),
    ],
)
def test_bad_spaces_fail_at_load_naming_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_command_line_overrides_are_checked_with_the_space(tmp_path):
    path = write(tmp_path, "base: {preset: synthetic}\nkind: grid\ngrid: {loss.w_ptc: [0.1]}\n")
    with pytest.raises(SpaceError, match="command line: unknown config key 'schedule.max_iter'"):
        load_space(path, {"schedule.max_iter": 6})
