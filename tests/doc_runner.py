"""Runs every ```python block of a Markdown file in order, in one namespace (top-level await allowed).

Used by test_readme.py in a fresh interpreter, so the agent registry holds only what the document defines.
"""

from __future__ import annotations

import ast
import asyncio
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


async def run(path: Path) -> int:
    namespace: dict[str, object] = {"__name__": "readme"}
    blocks = BLOCK.findall(path.read_text())  # noqa: ASYNC240 - a test helper reading its own input
    for index, source in enumerate(blocks):
        code = compile(
            source,
            f"{path.name}[block {index}]",
            "exec",
            flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
            dont_inherit=True,
        )
        outcome = eval(code, namespace)
        if asyncio.iscoroutine(outcome):
            await outcome
    print(f"{len(blocks)} blocks ran")
    return len(blocks)


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1])))
