"""import-linter contract types of our own, registered in pyproject's `[tool.importlinter] contract_types`.

`lint-imports` puts the working directory on `sys.path`, so `make lint` finds this module from the
repository root. It is a development tool: nothing in esper imports it.

`acyclic` (`packages = ["esper"]`): no import cycle among the modules of `packages` (each package and
all its descendants), module by module, lazy imports inside functions included (grimp sees them).
import-linter's own `acyclic_siblings` compares sibling packages: a cycle through a package's
`__init__` (`a.b` imports `a.b.c`, which imports `a.b`) passes it, so it cannot say "the import graph
has no cycle".

    for each module m, in name order, not yet on a reported cycle:
        the shortest import chain m → … → m (breadth first); report it if there is one

Every cycle holds a module that starts one, so a graph with a cycle reports at least one.

`forbidden_submodules` (`source_modules`, `forbidden_modules`): what the built-in `forbidden` cannot
say, a *submodule* of an external package (`torch.nn`). With `include_external_packages`, grimp keeps
an external package as one squashed node (`torch`), so `forbidden` refuses `torch.nn`; this contract
reads the source instead. A module breaks it when it

    imports a forbidden module or one below it     import torch.nn.functional as F
    imports it from its parent                     from torch import nn
    reaches it as an attribute of an import        torch.nn.functional.softmax(x)   (after `import torch`)

Every source module is read, and so is every module of the root packages that a source module
imports, directly or not (as the built-in `forbidden` follows indirect imports).
"""

import ast
import importlib.util
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

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


class ForbiddenSubmodulesContract(Contract):
    """`source_modules` (packages) must not use `forbidden_modules` (dotted names, any depth)."""

    type_name = "forbidden_submodules"

    source_modules = fields.ListField(subfield=fields.StringField())
    forbidden_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        roots = tuple(self.session_options["root_packages"])
        forbidden = tuple(self.forbidden_modules)  # type: ignore[arg-type]
        violations = []
        for source in sorted(self.source_modules):  # type: ignore[arg-type]
            if source not in graph.modules:
                raise ValueError(f"Module '{source}' does not exist.")
            for module in sorted(_modules_read_for(graph, source, roots)):
                path = module_file(module)
                if path is None:  # a namespace package has no source
                    continue
                for line, name in forbidden_uses(path.read_text(encoding="utf-8"), forbidden):
                    violations.append({"module": module, "line": line, "name": name,
                                       "via": _chain(graph, source, module)})
        return ContractCheck(kept=not violations, metadata={"violations": violations})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for v in check.metadata["violations"]:
            via = f" (imported by {' -> '.join(v['via'])})" if v["via"] else ""
            output.print_error(f"- {v['module']}:{v['line']} uses {v['name']}{via}", bold=False)
        output.new_line()


def _modules_read_for(graph: grimp.ImportGraph, source: str, roots: tuple[str, ...]) -> set[str]:
    """The source package's own modules plus every internal module it imports, directly or not."""
    upstream = graph.find_upstream_modules(source, as_package=True)
    internal = {m for m in upstream if m.split(".")[0] in roots}
    return {source, *graph.find_descendants(source), *internal}


def _chain(graph: grimp.ImportGraph, source: str, module: str) -> tuple[str, ...] | None:
    if module == source or module.startswith(source + "."):
        return None
    chains = graph.find_shortest_chains(importer=source, imported=module, as_packages=True)
    return min(chains) if chains else None


def module_file(module: str) -> Path | None:
    """The `.py` file of a module of an importable root package (only the root package is imported)."""
    root, *parts = module.split(".")
    spec = importlib.util.find_spec(root)
    if spec is None or not spec.submodule_search_locations:
        return Path(spec.origin) if spec is not None and spec.origin and not parts else None
    base = Path(next(iter(spec.submodule_search_locations)), *parts)
    for candidate in (base.with_name(base.name + ".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def forbidden_uses(source: str, forbidden: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line, dotted name) of every use of a forbidden module in `source`, one per name and line."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name → the module `import x` / `import x.y as z` bound it to
    used: set[tuple[int, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                used.add((node.lineno, alias.name))
                local = alias.asname or alias.name.split(".")[0]
                bound[local] = alias.name if alias.asname else local
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            used.update((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (dotted := _dotted(node)) and dotted[0] in bound:
            used.add((node.lineno, ".".join([bound[dotted[0]], *dotted[1:]])))
    hits = {(line, name) for line, name in used if any(_within(name, f) for f in forbidden)}
    # `torch.nn.functional.softmax` is also seen as `torch.nn.functional` and `torch.nn`: keep the longest.
    return sorted((line, name) for line, name in hits
                  if not any(other != name and other.startswith(name + ".") for l2, other in hits if l2 == line))


def _dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` → ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _within(name: str, module: str) -> bool:
    return name == module or name.startswith(module + ".")
