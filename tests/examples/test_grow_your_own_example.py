"""examples/grow_your_own.py (issue 19, README "Grow your own model"): a user's residual CNN and blueprint, grown on
Fashion-MNIST by the heuristic through `esper.train`, in under 60 lines of user code; the CLI resumes its run by
the import paths the run recorded. Fashion-MNIST here is a tiny IDX copy the test writes (tests/shell/test_compare)."""

import io
import json
import os
import subprocess
import sys
import tokenize
from pathlib import Path

from tests.shell.test_compare import write_fashion_mnist_idx

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "grow_your_own.py"


def _run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def user_code_lines(path: Path) -> int:
    """Lines holding code: no blank line, comment or docstring counts."""
    lines: set[int] = set()
    previous = tokenize.NEWLINE
    for token in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        docstring = token.type == tokenize.STRING and previous in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
        if token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER) and not docstring:
            lines.update(range(token.start[0], token.end[0] + 1))
        if token.type not in (tokenize.COMMENT, tokenize.NL):
            previous = token.type
    return len(lines)


def test_the_example_grows_the_user_s_blueprint_on_the_user_s_network_and_the_cli_resumes_it(tmp_path):
    assert user_code_lines(EXAMPLE) < 60
    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=300, n_test=100)
    path = os.pathsep.join([str(EXAMPLE.parent), str(EXAMPLE.parents[1])])  # the example's folder, esper's
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": path}
    run = tmp_path / "run"
    done = _run(str(EXAMPLE), "--data-dir", str(data), "--epochs", "12", "--train-size", "256", "--out", str(run),
                cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2].startswith("seed block2#0: channel_mix, germinated at epoch 1, ")  # the user's blueprint first
    assert lines[-1].startswith("final val accuracy 0.") and lines[-1].endswith(" parameters")
    user = json.loads((run / "config.json").read_text())["user"]
    assert user["host_factory"]["path"] == "grow_your_own:residual_cnn"
    assert [b["build"] for b in user["catalogue"]["blueprints"]] == ["grow_your_own:ChannelMix"]

    more = _run("-m", "esper.shell.cli", "train", "--resume", str(run), "--epochs", "13", "--no-progress",
                cwd=tmp_path, env=env)
    assert more.returncode == 0, more.stderr
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 13
