"""Our import-linter contracts (esper.testing.import_contracts) catch what they forbid.

`make lint` shows that esper keeps them; these tests show that they can break: pyproject's contracts
on `esper.core` run (lint-imports, in a subprocess) over a small stand-in package named `esper`.
"""

import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import grimp
import pytest

from esper.testing import import_contracts
from esper.testing.import_contracts import AcyclicContract, find_cycles, forbidden_uses, shortest_loop

ROOT = Path(__file__).resolve().parents[1]
NN = ("torch.nn",)


@pytest.mark.parametrize(("source", "expected"), [
    ("import torch.nn", [(1, "torch.nn")]),
    ("import torch.nn.functional as F", [(1, "torch.nn.functional")]),
    ("from torch import (\n    Tensor,\n    nn,\n)", [(1, "torch.nn")]),
    ("from torch.nn import functional", [(1, "torch.nn.functional")]),
    ("import torch\n\ny = torch.nn.functional.relu(x)", [(3, "torch.nn.functional.relu")]),
    ("import torch as th\n\nclass M(th.nn.Module): ...", [(3, "torch.nn.Module")]),
    ("def f():\n    from torch import nn\n    return nn", [(2, "torch.nn")]),
])
def test_every_way_of_reaching_torch_nn_is_found(source: str, expected: list[tuple[int, str]]) -> None:
    assert forbidden_uses(source, NN) == expected


@pytest.mark.parametrize("source", [
    "import torch\nfrom torch import Tensor\ny = torch.softmax(x, -1)",
    "import torch\ny = torch.nested.nested_tensor([])",  # torch.nested is not torch.nn
    "nn = object()\ny = nn.Module",  # a local name `nn` that no import bound
    "x = 'torch.nn'",
])
def test_torch_without_nn_is_not_a_violation(source: str) -> None:
    assert forbidden_uses(source, NN) == []


def _core_contracts() -> str:
    """pyproject's [tool.importlinter] with only the contracts on `esper.core`, as TOML text."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    lines = ["[tool.importlinter]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config.items() if key != "contracts"]
    for contract in config["contracts"]:
        if "esper.core" in contract.get("source_modules", ()):
            lines += ["", "[[tool.importlinter.contracts]]"]
            lines += [f"{key} = {json.dumps(value)}" for key, value in contract.items()]
    return "\n".join(lines) + "\n"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def bad_esper(tmp_path: Path) -> Path:
    """A stand-in `esper` whose core breaks each contract once, and once only through a helper."""
    _write(tmp_path, {
        "pyproject.toml": _core_contracts(),
        "esper/__init__.py": "",
        "esper/shell/__init__.py": "",
        "esper/helper.py": "import torch\n\n\ndef act(x):\n    return torch.nn.functional.relu(x)\n",
        "esper/core/__init__.py": "",
        "esper/core/clean.py": "import math\n\nimport torch\nfrom torch import Tensor\n",
        "esper/core/files.py": "import os\nfrom pathlib import Path\n",
        "esper/core/noisy.py": "import warnings\nimport logging\n",
        "esper/core/clock.py": "import time\nimport random\n",
        "esper/core/module.py": "from torch import nn\n\n\nclass Net(nn.Module): ...\n",
        "esper/core/uses_helper.py": "from esper.helper import act\n",
    })
    (tmp_path / "esper" / "testing").mkdir()
    (tmp_path / "esper" / "testing" / "__init__.py").write_text("")
    shutil.copy(import_contracts.__file__, tmp_path / "esper" / "testing" / "import_contracts.py")
    return tmp_path


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    command = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", command, "--config", "pyproject.toml", "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": ""}, capture_output=True, text=True,
                          timeout=120)


def test_the_core_contracts_break_on_each_forbidden_import(bad_esper: Path) -> None:
    result = _lint(bad_esper)
    out = " ".join(result.stdout.split())  # lint-imports wraps long lines
    assert result.returncode == 1, result.stdout + result.stderr
    for module, forbidden in [("files", "os"), ("files", "pathlib"), ("noisy", "warnings"),
                              ("noisy", "logging"), ("clock", "time"), ("clock", "random")]:
        assert f"esper.core.{module} -> {forbidden}" in out
    assert "esper.core.module:1 uses torch.nn" in out
    assert "esper.helper:5 uses torch.nn.functional.relu (imported by esper.core.uses_helper -> esper.helper)" in out
    assert "esper.core.clean" not in out


def test_the_core_contracts_keep_a_clean_core(bad_esper: Path) -> None:
    for name in ("files", "noisy", "clock", "module", "uses_helper"):
        (bad_esper / "esper" / "core" / f"{name}.py").unlink()
    result = _lint(bad_esper)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# --- acyclic ----------------------------------------------------------------------------------------


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
