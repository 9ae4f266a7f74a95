"""docs/analysis.md runs: every ``python`` block, in order, in a fresh folder; a block followed
by a ``text`` block must print exactly that text. So the guide cannot rot.

Regenerate the guide's pictures (docs/img/lr-sweep-*.png) with::

    python tests/test_docs_analysis.py --images
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "analysis.md"
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    line: int
    code: str
    expected: str | None  # the text block right after it, if any


def python_blocks(text: str) -> list[Block]:
    """The ``python`` blocks of a Markdown text (not ``python no-test``), each with the
    ``text`` block that follows it directly, if one does."""
    fences = list(FENCE.finditer(text))
    blocks = []
    for i, fence in enumerate(fences):
        if fence.group(1).strip() != "python":
            continue
        expected = None
        if i + 1 < len(fences):
            following = fences[i + 1]
            between = text[fence.end() : following.start()]
            if following.group(1).strip() == "text" and not between.strip():
                expected = following.group(2)
        blocks.append(Block(text.count("\n", 0, fence.start()) + 1, fence.group(2), expected))
    return blocks


def run_blocks(blocks: list[Block], folder: Path) -> list[str]:
    """Run the blocks in one namespace with ``folder`` as working directory; their outputs."""
    namespace: dict[str, object] = {"__name__": "__analysis_doc__"}
    outputs = []
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for block in blocks:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(block.code, f"{DOC.name}:{block.line}", "exec"), namespace)
            outputs.append(out.getvalue())
    finally:
        os.chdir(cwd)
    return outputs


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def test_every_python_block_of_the_analysis_guide_runs_and_prints_what_it_shows(tmp_path):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 7 and sum(b.expected is not None for b in blocks) >= 5
    outputs = run_blocks(blocks, tmp_path)
    for block, output in zip(blocks, outputs, strict=True):
        if block.expected is not None:
            assert _lines(output) == _lines(block.expected), f"block at line {block.line}"
    for image in ("lr-sweep-loss.png", "lr-sweep-weights.png"):
        made = tmp_path / "img" / image
        assert made.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (DOC.parent / "img" / image).exists(), f"docs/img/{image} is not committed"
    assert (tmp_path / "traces" / "lr-sweep" / "seed-exact-lr1" / "_run.json").exists()


def test_the_block_reader_pairs_code_with_its_output_and_skips_no_test_blocks():
    text = "a\n```python\nprint(1)\n```\n\n```text\n1\n```\n```python no-test\nx\n```\n"
    text += "```python\npass\n```\nprose\n```text\nnot its output\n```\n"
    blocks = python_blocks(text)
    assert [(b.line, b.code, b.expected) for b in blocks] == [
        (2, "print(1)\n", "1\n"),
        (12, "pass\n", None),
    ]


if __name__ == "__main__":
    if sys.argv[1:] != ["--images"]:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as scratch:
        run_blocks(python_blocks(DOC.read_text(encoding="utf-8")), Path(scratch))
        for image in sorted((Path(scratch) / "img").glob("*.png")):
            shutil.copy(image, DOC.parent / "img" / image.name)
            print(f"wrote docs/img/{image.name}")
