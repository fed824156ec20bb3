"""Lint and type checks as part of the suite, so the README's test command (and .ci/run) runs
them: ruff over every Python tree and mypy over engine/ and formats/, both configured in
pyproject.toml ([tool.ruff], [tool.mypy]). A failure prints the tool's report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINTED = ("engine", "formats", "server", "tests", "benchmarks")

pytestmark = pytest.mark.lint


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m TOOL ARGS`` of this interpreter's environment, in the repository root."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", [
    pytest.param(("ruff", "check", *LINTED), id="ruff"),
    pytest.param(("mypy",), id="mypy"),  # the files of [tool.mypy]
])
def test_tool_reports_no_problem(command: tuple[str, ...]) -> None:
    pytest.importorskip(command[0], reason=f"{command[0]} comes with the test extra: pip install -e '.[test]'")
    done = _run(*command)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` exited {done.returncode}:\n{done.stdout}{done.stderr}", pytrace=False)
