"""The README's script example runs as written and steps a seed to FOSSILIZED."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_a_short_core_example():
    blocks = _python_blocks()
    assert len(blocks) == 1
    code_lines = [line for line in blocks[0].splitlines() if line.strip() and not line.startswith("from ")]
    assert len(code_lines) <= 12, "the README promises a short example"


def test_readme_example_fossilizes_a_seed(capsys):
    namespace: dict[str, object] = {}
    exec(compile(_python_blocks()[0], str(README), "exec"), namespace)
    state = namespace["state"]
    assert state.slots[0].stage.name == "FOSSILIZED"
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in printed] == [
        "TRAINING", "TRAINING", "TRAINING", "BLENDING", "BLENDING", "BLENDING", "PROBATIONARY", "FOSSILIZED"
    ]
