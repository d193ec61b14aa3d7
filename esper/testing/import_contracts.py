"""import-linter contract types of our own, registered in pyproject's `[tool.importlinter] contract_types`.

`acyclic`: no import cycle among the modules of `packages` (each package and all its descendants),
module by module, lazy imports inside functions included (grimp sees them). import-linter's own
`acyclic_siblings` compares sibling packages: a cycle through a package's `__init__` (`a.b` imports
`a.b.c`, which imports `a.b`) passes it, so it cannot say "the import graph has no cycle".

    for each module m, in name order, not yet on a reported cycle:
        the shortest import chain m → … → m (breadth first); report it if there is one

Every cycle holds a module that starts one, so a graph with a cycle reports at least one.
"""

from collections import deque
from collections.abc import Iterable, Mapping

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def shortest_loop(imports: Mapping[str, Iterable[str]], start: str) -> list[str] | None:
    """The shortest chain `start → … → start` (start named at both ends), or None."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        for imported in sorted(imports.get(module, ())):
            if imported == start:
                chain = [module]
                while chain[-1] != start:
                    chain.append(came_from[chain[-1]])
                return [*reversed(chain), start]
            if imported not in came_from:
                came_from[imported] = module
                queue.append(imported)
    return None


def find_cycles(imports: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """One shortest loop per module that starts one, skipping modules already on a reported loop."""
    cycles, seen = [], set()
    for module in sorted(imports):
        if module in seen:
            continue
        loop = shortest_loop(imports, module)
        if loop is not None:
            cycles.append(loop)
            seen.update(loop)
    return cycles


class AcyclicContract(Contract):
    """`type = "acyclic"`, `packages = ["esper"]`: the import graph of these packages has no cycle."""

    type_name = "acyclic"
    packages = fields.ListField(subfield=fields.ModuleField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        names = [package.name for package in self.packages]  # type: ignore[attr-defined]
        modules = {m for name in names for m in (graph.find_descendants(name) | {name})}
        imports = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
        cycles = find_cycles(imports)
        output.verbose_print(verbose, f"{len(modules)} modules, {len(cycles)} cycles")
        return ContractCheck(kept=not cycles, metadata={"cycles": cycles})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error("Import cycle: " + " -> ".join(cycle))
            output.new_line()
