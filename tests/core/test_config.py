"""Example tests of `LifecycleConfig` (docs/lifecycle.md §1.5), `Rules.for_layout`, the blueprint
catalogue (§6.2, §6.3) and the action-head sizes (§9)."""

import pytest
from lifecycle_helpers import SPECS, fresh

from esper.core.catalogue import catalogue_for
from esper.core.config import LifecycleConfig, Rules, min_span
from esper.core.errors import ConfigError, UnknownBlueprintError
from esper.core.legality import masks
from esper.core.lifecycle import initial_state
from esper.core.seed import SlotSpec
from esper.core.stages import Stage

# ------------------------------------------------------------------------------ config errors

# (overrides, the offending field that the message starts with; the three dwells share one rule)
VIOLATIONS = [
    ({"min_training_epochs": 0, "max_training_epochs": 6}, "min_training_epochs"),
    ({"max_training_epochs": 2}, "max_training_epochs"),
    ({"min_grad_ratio": -0.01}, "min_grad_ratio"),
    ({"grad_ratio_cap": 0.05}, "grad_ratio_cap"),
    ({"tempo_choices": (), "default_tempo": 5}, "tempo_choices"),
    ({"tempo_choices": (0, 5)}, "tempo_choices"),
    ({"tempo_choices": (3, 5.0)}, "tempo_choices"),
    ({"tempo_choices": (3, 5, 5)}, "tempo_choices"),
    ({"default_tempo": 4}, "default_tempo"),
    ({"sigmoid_steepness": 0.0}, "sigmoid_steepness"),
    ({"min_blending_epochs": -1}, "min_blending_epochs"),
    ({"alpha_complete": 0.0}, "alpha_complete"),
    ({"alpha_complete": 1.01}, "alpha_complete"),
    ({"min_probation_epochs": -1}, "min_probation_epochs"),
    ({"max_probation_epochs": 0}, "max_probation_epochs"),
    ({"min_probation_epochs": 6, "max_probation_epochs": 5}, "max_probation_epochs"),
    ({"min_fossilize_contribution": -0.01}, "min_fossilize_contribution"),
    ({"cull_dwell": 0}, "cull/embargo/reset dwells"),
    ({"embargo_dwell": 0}, "cull/embargo/reset dwells"),
    ({"reset_dwell": 0}, "cull/embargo/reset dwells"),
    ({"min_cull_age": -1}, "min_cull_age"),
    ({"max_seeds": -1}, "max_seeds"),
    ({"max_seed_params": -1}, "max_seed_params"),
    ({"alpha_granularity": "batch"}, "alpha_granularity"),
    ({"input_grad_from": Stage.TRAINING}, "input_grad_from"),
    ({"input_grad_from": Stage.CULLED}, "input_grad_from"),
]


@pytest.mark.parametrize(
    ("overrides", "field"), VIOLATIONS, ids=[f"{v[1]}-{i}" for i, v in enumerate(VIOLATIONS)]
)
def test_each_violation_raises_a_config_error_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        LifecycleConfig(**overrides)
    # The rule that fired is the one about this field: its message starts with the field name.
    assert str(info.value).startswith(f"lifecycle config: {field}")
    assert isinstance(info.value, ValueError)


# Values exactly at each rule's edge are accepted.
EDGE_VALUES = [
    {"min_training_epochs": 1},
    {"max_training_epochs": 3},
    {"min_grad_ratio": 0.0},
    {"grad_ratio_cap": 0.0501},
    {"tempo_choices": (5,)},
    {"min_blending_epochs": 0},
    {"alpha_complete": 1.0},
    {"min_probation_epochs": 0},
    {"max_probation_epochs": 1},
    {"min_probation_epochs": 5, "max_probation_epochs": 5},
    {"min_fossilize_contribution": 0.0},
    {"cull_dwell": 1, "embargo_dwell": 1, "reset_dwell": 1},
    {"min_cull_age": 0},
    {"alpha_granularity": "step"},
    {"input_grad_from": Stage.BLENDING},
    {"input_grad_from": Stage.PROBATIONARY},
]


@pytest.mark.parametrize("overrides", EDGE_VALUES)
def test_values_at_the_edge_are_accepted(overrides: dict) -> None:
    cfg = LifecycleConfig(**overrides)
    for name, value in overrides.items():
        assert getattr(cfg, name) == value


def test_defaults_match_the_spec_table() -> None:
    cfg = LifecycleConfig()
    assert (cfg.min_training_epochs, cfg.min_training_improvement) == (3, 0.005)
    assert (cfg.min_grad_ratio, cfg.grad_ratio_cap) == (0.05, 10.0)
    assert (cfg.tempo_choices, cfg.default_tempo) == ((3, 5, 8), 5)
    assert (cfg.min_blending_epochs, cfg.alpha_complete) == (3, 0.95)
    assert (cfg.min_probation_epochs, cfg.min_fossilize_contribution) == (1, 0.01)
    assert (cfg.cull_dwell, cfg.embargo_dwell, cfg.reset_dwell, cfg.min_cull_age) == (1, 5, 1, 3)
    assert (cfg.max_seeds, cfg.max_seed_params, cfg.alpha_granularity) == (0, 0, "epoch")
    assert cfg.input_grad_from == Stage.FOSSILIZED and cfg.strict is True
    assert cfg.sigmoid_steepness == 12.0 and cfg.blend_curve.name == "SIGMOID"


# -------------------------------------------------------------------------------- for_horizon


@pytest.mark.parametrize(
    ("horizon", "max_training", "max_probation"),
    [(1, 6, 5), (50, 6, 5), (59, 6, 5), (60, 6, 6), (69, 6, 6), (100, 10, 10), (200, 20, 20)],
)
def test_for_horizon_scales_the_timeouts(horizon: int, max_training: int, max_probation: int) -> None:
    cfg = LifecycleConfig.for_horizon(horizon)
    assert cfg.max_training_epochs == max(6, horizon // 10) == max_training
    assert cfg.max_probation_epochs == max(5, horizon // 10) == max_probation


@pytest.mark.parametrize("horizon", [0, -1, -100])
def test_for_horizon_refuses_a_horizon_below_one(horizon: int) -> None:
    with pytest.raises(ConfigError, match="horizon"):
        LifecycleConfig.for_horizon(horizon)


def test_for_horizon_allows_horizons_too_short_to_fossilize() -> None:
    cfg = LifecycleConfig.for_horizon(3)  # docs/rl.md §10's 3-epoch run; the shell only warns
    assert min_span(cfg, min(cfg.tempo_choices)) > 3


def test_for_horizon_overrides_win_and_are_validated() -> None:
    cfg = LifecycleConfig.for_horizon(200, max_probation_epochs=7, strict=False)
    assert (cfg.max_training_epochs, cfg.max_probation_epochs, cfg.strict) == (20, 7, False)
    with pytest.raises(ConfigError, match="max_training_epochs"):
        LifecycleConfig.for_horizon(200, max_training_epochs=2)


@pytest.mark.parametrize(("tempo", "span"), [(3, 7), (5, 9), (8, 12)])
def test_min_span_with_defaults(tempo: int, span: int) -> None:
    assert min_span(LifecycleConfig(), tempo) == span == 3 + tempo + 1


def test_cooldown_records() -> None:
    assert LifecycleConfig().cooldown_records == 7
    assert LifecycleConfig(embargo_dwell=2).cooldown_records == 4


# ----------------------------------------------------------------------------------- Rules


def test_rules_for_a_cnn_layout() -> None:
    rules = Rules.for_layout("cnn", SPECS)
    assert rules.catalogue.topology == "cnn" and rules.catalogue == catalogue_for("cnn")
    assert rules.config == LifecycleConfig.for_horizon(100)
    assert len(rules.validation.entries) == 3
    for s in range(3):
        assert rules.validation.entries[s] == (True,) * 7  # every CNN blueprint fits C ≥ 1


def test_rules_for_a_transformer_layout_marks_unfit_pairs() -> None:
    specs = (SlotSpec("early", 0, 0, 64, (64, 64)), SlotSpec("late", 1, 2, 66, (64, 66)))
    rules = Rules.for_layout("transformer", specs, horizon=200)
    attention = rules.catalogue.index_of("attention")
    assert rules.config.max_training_epochs == 20
    assert rules.validation.status(0, attention) is True
    assert rules.validation.status(1, attention) is None  # 66 % 4 != 0: unfit, not an error
    assert rules.validation.status(1, rules.catalogue.index_of("mlp")) is True


def test_rules_keep_an_explicit_config() -> None:
    cfg = LifecycleConfig(max_seeds=2)
    assert Rules.for_layout("cnn", SPECS, config=cfg).config is cfg


@pytest.mark.parametrize("topology", ["rnn", "CNN", ""])
def test_unknown_topology_raises(topology: str) -> None:
    with pytest.raises(ConfigError, match="topology"):
        Rules.for_layout(topology, SPECS)


# -------------------------------------------------------------------------------- catalogue

CNN_TABLE = {  # docs/lifecycle.md §6.2: params at C = 8, 16, 32, 64, 128
    "noop": (0, 0, 0, 0, 0),
    "norm": (17, 33, 65, 129, 257),
    "attention": (64, 128, 512, 2048, 8192),
    "depthwise": (152, 432, 1376, 4800, 17792),
    "bottleneck": (216, 280, 1104, 4384, 17472),
    "conv_light": (592, 2336, 9280, 36992, 147712),
    "conv_heavy": (1184, 4672, 18560, 73984, 295424),
}
TRANSFORMER_TABLE = {  # docs/lifecycle.md §6.3: params at D = 64, 128, 384
    "noop": (0, 0, 0),
    "norm": (129, 257, 769),
    "lora": (1024, 2048, 6144),
    "attention": (16768, 66304, 592128),
    "mlp": (33216, 131968, 1182336),
}


@pytest.mark.parametrize(
    ("topology", "table", "dims"),
    [
        ("cnn", CNN_TABLE, (8, 16, 32, 64, 128)),
        ("transformer", TRANSFORMER_TABLE, (64, 128, 384)),
    ],
)
def test_catalogue_formulas_equal_the_spec_tables(topology: str, table: dict, dims: tuple[int, ...]) -> None:
    catalogue = catalogue_for(topology)
    assert catalogue.names == tuple(table)  # same names, same index order
    for index, (name, counts) in enumerate(table.items()):
        spec = catalogue.spec(name)
        assert spec.index == index
        assert tuple(spec.params(d) for d in dims) == counts, name


@pytest.mark.parametrize(
    ("topology", "germinable"),
    [
        ("cnn", ("norm", "attention", "depthwise", "bottleneck", "conv_light", "conv_heavy")),
        ("transformer", ("norm", "lora", "attention", "mlp")),
    ],
)
def test_germinable_excludes_noop_in_catalogue_order(topology: str, germinable: tuple[str, ...]) -> None:
    catalogue = catalogue_for(topology)
    assert tuple(e.name for e in catalogue.germinable) == germinable
    for k, name in enumerate(germinable):
        assert catalogue.germinable_index(name) == k
        assert catalogue.germinable[k].index == catalogue.index_of(name) == k + 1
        assert catalogue.spec(name).name == name
    assert catalogue.index_of("noop") == 0


@pytest.mark.parametrize(
    ("topology", "name"),
    [
        ("cnn", "lora"),
        ("cnn", "mlp"),
        ("cnn", "flex_attention"),
        ("cnn", ""),
        ("transformer", "depthwise"),
        ("transformer", "conv_light"),
        ("transformer", "Norm"),
    ],
)
def test_unknown_names_raise(topology: str, name: str) -> None:
    catalogue = catalogue_for(topology)
    for lookup in (catalogue.index_of, catalogue.spec, catalogue.germinable_index):
        with pytest.raises(UnknownBlueprintError) as info:
            lookup(name)
        assert info.value.topology == topology and info.value.name == name


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_noop_is_not_germinable(topology: str) -> None:
    with pytest.raises(UnknownBlueprintError):
        catalogue_for(topology).germinable_index("noop")


def test_catalogues_of_one_topology_are_equal_values() -> None:
    assert catalogue_for("cnn") == catalogue_for("cnn")
    assert catalogue_for("cnn") != catalogue_for("transformer")


@pytest.mark.parametrize(("dim", "fits"), [(4, True), (64, True), (66, False), (6, False), (384, True)])
def test_transformer_attention_constraint(dim: int, fits: bool) -> None:
    assert catalogue_for("transformer").spec("attention").fits(dim) is fits
    assert catalogue_for("transformer").spec("lora").fits(dim)


# ---------------------------------------------------------------------------------- heads


@pytest.mark.parametrize(("topology", "dim", "k"), [("cnn", None, 6), ("transformer", 64, 4)])
def test_head_sizes_for_three_slot_hosts(topology: str, dim: int | None, k: int) -> None:
    specs = (
        SPECS
        if dim is None
        else tuple(SlotSpec(n, i, i, dim, (64, dim)) for i, n in enumerate(("early", "mid", "late")))
    )
    rules = Rules.for_layout(topology, specs)
    state = fresh() if dim is None else initial_state(topology, specs)
    m = masks(state, rules)
    assert len(rules.catalogue.germinable) == k
    assert len(m.op) == 4
    assert len(m.slot) == 4 and all(len(row) == 3 for row in m.slot)
    assert len(m.blueprint) == 3 and all(len(row) == k for row in m.blueprint)
    assert len(m.tempo) == 3
