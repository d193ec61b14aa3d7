"""A run records the git commit of the esper it ran (config.json's and checkpoints' `versions`), or
"unknown" where esper is no checkout's own package; runs recorded before that still load."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from esper.shell.run_checkpoint import PACKAGE_DIR, UNKNOWN_COMMIT, checkout_commit, git_commit, versions
from esper.shell.run_config import load_config_file, resolve

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")
OLD_RUN = Path(__file__).resolve().parents[1] / "fixtures" / "old_run"


def _git(repo: Path, *argv: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *argv],
                          capture_output=True, text=True, check=True).stdout.strip()


def _repo_with(tmp_path: Path, package: str) -> tuple[Path, str]:
    """A fresh repository with one commit holding `package`/__init__.py; (its package folder, HEAD)."""
    repo = tmp_path / "checkout"
    (repo / package).mkdir(parents=True)
    (repo / package / "__init__.py").write_text("", encoding="utf-8")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    return repo / package, _git(repo, "rev-parse", "HEAD")


@needs_git
def test_a_package_at_a_checkouts_top_gives_its_head_commit(tmp_path):
    package, head = _repo_with(tmp_path, "esper")
    assert len(head) == 40
    assert git_commit(package) == head


@needs_git
def test_a_copy_inside_someone_elses_repository_is_unknown(tmp_path):
    """A pip-installed esper in a project's .venv: the enclosing repository is not esper's checkout."""
    package, _ = _repo_with(tmp_path, ".venv/lib/site-packages/esper")
    assert git_commit(package) == UNKNOWN_COMMIT


@needs_git
def test_outside_any_repository_and_before_a_first_commit_it_is_unknown(tmp_path):
    (tmp_path / "plain" / "esper").mkdir(parents=True)
    assert git_commit(tmp_path / "plain" / "esper") == UNKNOWN_COMMIT
    (tmp_path / "empty" / "esper").mkdir(parents=True)
    _git(tmp_path / "empty", "init", "-q")
    assert git_commit(tmp_path / "empty" / "esper") == UNKNOWN_COMMIT


def test_without_a_git_binary_it_is_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `git` on it
    assert git_commit(PACKAGE_DIR) == UNKNOWN_COMMIT


def test_versions_carry_this_processs_commit_read_once(monkeypatch):
    commit = checkout_commit()
    assert versions()["git_commit"] == commit
    assert commit == UNKNOWN_COMMIT or len(commit) == 40
    monkeypatch.setenv("PATH", "")  # cached: no second git call, the same answer
    assert checkout_commit() == commit


def test_a_config_json_without_a_commit_still_loads():
    record = json.loads((OLD_RUN / "config.json").read_text(encoding="utf-8"))
    assert "git_commit" not in record["versions"]
    assert resolve(load_config_file(OLD_RUN / "config.json"), {}).task == record["config"]["train"]["task"]
