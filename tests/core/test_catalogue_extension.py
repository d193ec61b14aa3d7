"""The mlp catalogue and `Catalogue.with_blueprint` (docs/lifecycle.md §6.5, §6.6): pure, explicit extension."""

import pytest
import torch

from esper.core.catalogue import TOPOLOGIES, Catalogue, ValidationTable, catalogue_for
from esper.core.errors import ConfigError, UnknownBlueprintError
from esper.shell.nets.blueprints import build_blueprint

MLP_TABLE = {  # D = 16, 64: by hand from the formulas of §6.5
    "noop": (0, 0),
    "norm": (33, 129),
    "lora": (256, 1024),
    "mlp": (2160, 33216),
}


def test_the_mlp_catalogue_pins_its_formulas_and_modules():
    catalogue = catalogue_for("mlp")
    assert "mlp" in TOPOLOGIES and catalogue.names == tuple(MLP_TABLE)
    for name, counts in MLP_TABLE.items():
        for d, expected in zip((16, 64), counts, strict=True):
            module = build_blueprint("mlp", name, d, torch.Generator().manual_seed(0))
            x = torch.randn(5, d)
            assert catalogue.spec(name).params(d) == expected == sum(p.numel() for p in module.parameters())
            assert torch.equal(module(x), torch.zeros_like(x))  # δ = 0 at birth on flat features


def test_with_blueprint_returns_a_new_catalogue_and_leaves_the_old_one():
    base = catalogue_for("cnn")
    build = object  # opaque to the core: never called here
    extended = base.with_blueprint("mine", build, lambda c: 3 * c, lambda c: c % 2 == 0)
    assert base == catalogue_for("cnn") and "mine" not in base.names
    spec = extended.spec("mine")
    assert (spec.index, spec.build, spec.params(8), spec.fits(8), spec.fits(7)) == (7, build, 24, True, False)
    assert extended.germinable[-1] is spec and extended.germinable_index("mine") == 6
    assert extended.with_blueprint("two", build, lambda c: 0).names[-2:] == ("mine", "two")
    assert ValidationTable.from_constraints(extended, [7]).entries == ((*(True,) * 7, None),)
    assert extended.spec("norm").build is None  # built-ins keep the shell's modules
    with pytest.raises(UnknownBlueprintError):
        base.spec("mine")


def test_an_extension_fits_every_positive_dim_by_default():
    spec = catalogue_for("mlp").with_blueprint("mine", object, lambda d: d).spec("mine")
    assert spec.fits(1) and not spec.fits(0)


@pytest.mark.parametrize(("name", "build", "params", "match"), [
    ("norm", object, len, "already has a blueprint 'norm'"),
    ("Bad-Name", object, len, "does not match"),
    ("", object, len, "does not match"),
    ("mine", 3, len, "build must be callable"),
    ("mine", object, 3, "params must be callable"),
])
def test_a_bad_extension_raises_a_config_error(name, build, params, match):
    with pytest.raises(ConfigError, match=match):
        catalogue_for("transformer").with_blueprint(name, build, params)


def test_equal_extensions_compare_equal_and_hash_alike():
    build, params = object, len
    a = catalogue_for("mlp").with_blueprint("mine", build, params)
    b = catalogue_for("mlp").with_blueprint("mine", build, params)
    assert a == b and hash(a) == hash(b) and isinstance(a, Catalogue)
