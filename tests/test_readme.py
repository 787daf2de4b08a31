"""The README's commands run as written in a fresh shell after its set-up command: every Python they start is
the virtual environment's, and the Python example runs from outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, re.MULTILINE | re.DOTALL)
# a program a fresh shell has only once the environment is active, where a command starts
VENV_PROGRAMS = re.compile(r"(?:^|&&|\|\||[;|])\s*(python|pip|pytest|ruff|torchrun|dgd-fusion)(?=\s)")


def shell_lines(blocks: list[tuple[str, str]]) -> list[str]:
    """The commands of the bash blocks: no comments, continuation lines joined."""
    text = "\n".join(body for language, body in blocks if language == "bash").replace("\\\n", " ")
    return [line.split("  #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def bare_programs(line: str) -> list[str]:
    """The programs ``line`` starts by a bare name that only an activated environment puts on the PATH."""
    return VENV_PROGRAMS.findall(line)


def test_the_check_tells_a_bare_python_from_the_environments():
    assert bare_programs("python -m fusion_core fuse a b -o c") == ["python"]
    assert bare_programs("torchrun --nproc_per_node=2 -m fusion_core train") == ["torchrun"]
    assert bare_programs(".venv/bin/python -m fusion_core fuse a b -o c") == []
    assert bare_programs("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt") == []
    assert bare_programs(".venv/bin/python -m pytest -m 'not slow'") == []
    assert bare_programs("python3 -m venv .venv && pip install -r requirements.txt") == ["pip"]


def test_every_readme_command_names_the_environments_programs():
    lines = shell_lines(BLOCKS)
    assert len(lines) > 20  # the set-up, test and command-line blocks were all read
    assert [line for line in lines if bare_programs(line)] == []


@pytest.mark.slow
def test_the_python_example_runs_from_outside_the_repository(tmp_path):
    code = next(body for language, body in BLOCKS if language == "python")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}  # as `pip install -e .` would make it importable
    done = subprocess.run([sys.executable, "-c", code + "\nprint(result.fused.shape)"], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(480, 640, 3)"
