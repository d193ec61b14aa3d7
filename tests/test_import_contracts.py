"""The core's import contracts catch what they forbid.

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

import pytest

from esper import _lint_contracts
from esper._lint_contracts import forbidden_uses

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
    shutil.copy(_lint_contracts.__file__, tmp_path / "esper" / "_lint_contracts.py")
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
