"""The code is lint-clean and formatted (ruff, configured in pyproject.toml), checked like any other test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


@pytest.mark.parametrize("command", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(command: list[str]) -> None:
    if not RUFF.exists():
        pytest.skip(f"ruff is not installed beside {sys.executable} (uv sync installs it with the dev group)")
    done = subprocess.run([str(RUFF), *command], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
