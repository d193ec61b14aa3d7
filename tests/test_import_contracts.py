"""The `acyclic` import-linter contract (esper.testing.import_contracts) that `make lint` runs on esper."""

import grimp

from esper.testing.import_contracts import AcyclicContract, find_cycles, shortest_loop


def _graph(imports: dict[str, list[str]]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for module in imports:
        graph.add_module(module)
    for importer, imported in ((a, b) for a, targets in imports.items() for b in targets):
        graph.add_import(importer=importer, imported=imported)
    return graph


def _check(imports: dict[str, list[str]]) -> tuple[bool, list[list[str]]]:
    contract = AcyclicContract("no cycle", session_options={}, contract_options={"packages": ["pkg"]})
    check = contract.check(_graph(imports), verbose=False)
    return check.kept, check.metadata["cycles"]


def test_a_layered_graph_is_kept():
    assert _check({"pkg": [], "pkg.cli": ["pkg.driver", "pkg.core"], "pkg.driver": ["pkg.core"], "pkg.core": []}) \
        == (True, [])


def test_a_cycle_between_modules_breaks_it_and_is_named():
    kept, cycles = _check({"pkg": [], "pkg.run": ["pkg.rl.runner"], "pkg.rl": [], "pkg.rl.runner": ["pkg.run"]})
    assert not kept and cycles == [["pkg.rl.runner", "pkg.run", "pkg.rl.runner"]]


def test_a_cycle_through_a_package_init_breaks_it():
    # import-linter's acyclic_siblings keeps this one: pkg.sub is the package, not a sibling of pkg.sub.a.
    kept, cycles = _check({"pkg": [], "pkg.sub": ["pkg.sub.a"], "pkg.sub.a": ["pkg.sub"]})
    assert not kept and cycles == [["pkg.sub", "pkg.sub.a", "pkg.sub"]]


def test_each_loop_reported_is_the_shortest_from_a_module_not_yet_on_one():
    imports = {"a": ["b", "c"], "b": ["c"], "c": ["a"], "d": ["e"], "e": ["d"], "f": []}
    assert shortest_loop(imports, "a") == ["a", "c", "a"]
    assert shortest_loop(imports, "f") is None
    assert find_cycles(imports) == [["a", "c", "a"], ["b", "c", "a", "b"], ["d", "e", "d"]]
