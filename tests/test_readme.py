"""The README's examples run as written, and it starts with the two commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_every_python_block_of_the_readme_runs() -> None:
    runner = Path(__file__).with_name("doc_runner.py")
    proc = subprocess.run(
        [sys.executable, str(runner), str(README)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[0]) >= 4


def test_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    first_block = lines[lines.index("```sh") + 1 : lines.index("```", lines.index("```sh") + 1)]
    assert [line.split("#")[0].strip() for line in first_block] == ["make run", "make test"]
    assert lines.index("```sh") <= 3
