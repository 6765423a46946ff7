"""The docs are part of the product: every command and snippet of README.md and docs/*.md runs.

Every fenced ```bash / ```sh / ```python block of README.md and docs/*.md is one test case
(id ``file:line`` of its opening fence). It runs in a fresh temporary folder with the venv's
``zcfast`` / ``python`` first on PATH and *no* PYTHONPATH (the console script must work as a user
installed it). ```text blocks and blocks without a language are never run.

The blocks run with ``OMP_NUM_THREADS=1`` unless the environment sets it (stored scores are
computed on one torch thread whatever it is; it only keeps the run quick on a loaded CI box).

HTML comments on the line(s) directly before a fence change how it runs:

- ``<!-- doctest: skip=REASON -->``: not run (needs a GPU, installs packages, a cluster, hours);
  the test is reported as skipped with the reason.
- ``<!-- doctest: replace=OLD=>NEW -->``: substitute text before running (``--n 1000=>--n 4``);
  may be repeated. A replace whose OLD is not in the block fails (a stale marker).

A ``doctest:`` comment that is not directly before a runnable fence, or whose directive is
unknown, fails the ``test_markers_well_formed`` case, so a typo cannot silently skip a block.

bash blocks run as one script under ``bash -e`` (bash itself joins ``\\`` continuations and
runs line by line; the first failing command stops the block and is named in the failure).
python blocks are written to ``snippet.py`` and run with the venv's python.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES: tuple[Path, ...] = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
RUNNABLE = {"bash": "bash", "sh": "bash", "python": "python"}
#: wall-clock limit of one block; a block that needs longer must shrink itself with replace markers
BLOCK_TIMEOUT_S = 120

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doctest:\s*(?P<body>.*?)\s*-->\s*$")

pytestmark = pytest.mark.docs


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file.

    Attributes:
        path: the Markdown file; line: 1-based line of the opening fence.
        lang: the fence's language (``""`` when none); code: the block's text, dedented.
        skip: the reason of a ``skip`` marker, or None; replaces: ``(old, new)`` in order.
    """

    path: Path
    line: int
    lang: str
    code: str
    skip: str | None
    replaces: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        return f"{_rel(self.path)}:{self.line}"

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE


def _rel(path: Path) -> str:
    """``path`` relative to the repository (as in test ids), or as given."""
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def parse_marker(body: str, where: str) -> tuple[str, str]:
    """``("skip", reason)`` or ``("replace", "OLD=>NEW")`` from a marker body.

    Raises:
        ValueError naming ``where`` for an unknown directive, an empty skip reason or a replace
        without ``=>``.
    """
    name, sep, value = body.partition("=")
    name = name.strip()
    if name not in ("skip", "replace") or not sep:
        raise ValueError(f"{where}: unknown doctest marker {body!r}; use skip=REASON or replace=OLD=>NEW")
    if name == "skip" and not value.strip():
        raise ValueError(f"{where}: skip marker without a reason")
    if name == "replace" and "=>" not in value:
        raise ValueError(f"{where}: replace marker {body!r} has no '=>' (replace=OLD=>NEW)")
    return name, value


def parse_blocks(path: Path, text: str | None = None) -> tuple[list[Block], list[str]]:
    """Every fenced block of ``path`` with its markers, and the marker problems found.

    Returns:
        ``(blocks, problems)``; a problem is a one-line message naming ``file:line``.
    """
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    pending: list[tuple[int, str]] = []  # (line, body) of markers directly above
    i = 0
    rel = _rel(path)
    while i < len(lines):
        m = _MARKER.match(lines[i])
        if m:
            pending.append((i + 1, m.group("body")))
            i += 1
            continue
        f = _FENCE.match(lines[i])
        if not f:
            for ln, body in pending:
                problems.append(f"{rel}:{ln}: doctest marker {body!r} is not directly before a fence")
            pending = []
            i += 1
            continue
        indent, fence, lang = f.group("indent"), f.group("fence"), f.group("lang").lower()
        start = i + 1
        body_lines: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[i]):
            line = lines[i]
            body_lines.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # the closing fence
        skip: str | None = None
        replaces: list[tuple[str, str]] = []
        for ln, body in pending:
            try:
                name, value = parse_marker(body, f"{rel}:{ln}")
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if lang not in RUNNABLE:
                problems.append(f"{rel}:{ln}: doctest marker before a ```{lang or '(no language)'} block, "
                                "which is never run")
            elif name == "skip":
                skip = value.strip()
            else:
                old, _, new = value.partition("=>")
                replaces.append((old, new))
        pending = []
        blocks.append(Block(path, start, lang, "\n".join(body_lines) + "\n", skip, tuple(replaces)))
    for ln, body in pending:
        problems.append(f"{rel}:{ln}: doctest marker {body!r} is not directly before a fence")
    return blocks, problems


def apply_replaces(block: Block) -> str:
    """The block's code after its replace markers, in order.

    Raises:
        ValueError naming the block when an OLD text is not in it (a stale marker).
    """
    code = block.code
    for old, new in block.replaces:
        if old not in code:
            raise ValueError(f"{block.id}: replace marker {old!r}=>{new!r}: {old!r} is not in the block")
        code = code.replace(old, new)
    return code


def _all_blocks() -> list[Block]:
    out: list[Block] = []
    for p in DOC_FILES:
        out.extend(parse_blocks(p)[0])
    return out


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the installed console script must work without it
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("OMP_NUM_THREADS", "1")  # a shared CI box: torch's thread pool only adds stalls
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``block`` (after its replace markers) in ``workdir``; the completed process."""
    code = apply_replaces(block)
    if RUNNABLE[block.lang] == "bash":
        script = workdir / "block.sh"
        script.write_text("trap 'echo \"doc command failed (exit $?): $BASH_COMMAND\" >&2' ERR\n" + code)
        cmd = ["bash", "-e", str(script)]
    else:
        script = workdir / "snippet.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    return subprocess.run(cmd, cwd=workdir, env=_env(), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)


RUNNABLE_BLOCKS = [b for b in _all_blocks() if b.runnable]


def test_markers_well_formed() -> None:
    """No unknown, misplaced or reason-less marker anywhere in the docs."""
    problems = [p for path in DOC_FILES for p in parse_blocks(path)[1]]
    assert not problems, "\n".join(problems)


def test_every_doc_has_been_found() -> None:
    assert (ROOT / "README.md") in DOC_FILES and len(DOC_FILES) >= 2
    assert RUNNABLE_BLOCKS, "no runnable block found in the docs"


@pytest.mark.parametrize("block", RUNNABLE_BLOCKS, ids=lambda b: b.id)
def test_doc_block_runs(block: Block, tmp_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"doctest skip: {block.skip}")
    try:
        proc = run_block(block, tmp_path)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.id}: still running after {BLOCK_TIMEOUT_S} s; shrink it with a replace marker\n"
                    f"{(exc.stderr or '')[-2000:] if isinstance(exc.stderr, str) else ''}")
    if proc.returncode != 0:
        pytest.fail(f"{block.id} ({block.lang}) exited {proc.returncode}\n--- stdout (tail)\n"
                    f"{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}")


# ------------------------------------------------------------------------------------------
# The runner's own parsing (synthetic documents; no subprocess)
# ------------------------------------------------------------------------------------------
_SAMPLE = """\
text
<!-- doctest: replace=--n 1000=>--n 4 -->
<!-- doctest: replace=--seeds 30=>--seeds 2 -->
```bash
zcfast correlate --n 1000 --seeds 30
```

<!-- doctest: skip=needs a GPU -->
```python
import torch; torch.zeros(1, device="cuda")
```

```text
not run
```

  ```sh
  echo indented
  ```
"""


def test_parser_reads_markers_and_fences() -> None:
    blocks, problems = parse_blocks(Path("sample.md"), _SAMPLE)
    assert problems == []
    assert [(b.line, b.lang, b.runnable) for b in blocks] == [
        (4, "bash", True), (9, "python", True), (13, "text", False), (17, "sh", True)]
    assert blocks[0].replaces == (("--n 1000", "--n 4"), ("--seeds 30", "--seeds 2"))
    assert apply_replaces(blocks[0]) == "zcfast correlate --n 4 --seeds 2\n"
    assert blocks[1].skip == "needs a GPU" and blocks[0].skip is None
    assert blocks[3].code == "echo indented\n"


@pytest.mark.parametrize("doc, problem", [
    ("<!-- doctest: skipp=typo -->\n```bash\ntrue\n```\n", "unknown doctest marker"),
    ("<!-- doctest: skip= -->\n```bash\ntrue\n```\n", "without a reason"),
    ("<!-- doctest: replace=a->b -->\n```bash\ntrue\n```\n", "no '=>'"),
    ("<!-- doctest: skip=why -->\n\n```bash\ntrue\n```\n", "not directly before a fence"),
    ("<!-- doctest: skip=why -->\n```text\nx\n```\n", "never run"),
    ("text\n<!-- doctest: skip=why -->\n", "not directly before a fence"),
], ids=["unknown-directive", "skip-no-reason", "replace-no-arrow", "marker-not-adjacent",
        "marker-on-text-block", "marker-at-end"])
def test_parser_refuses_bad_markers(doc: str, problem: str) -> None:
    _, problems = parse_blocks(Path("bad.md"), doc)
    assert len(problems) == 1 and problem in problems[0] and "bad.md:" in problems[0]


def test_stale_replace_fails() -> None:
    blocks, _ = parse_blocks(Path("s.md"), "<!-- doctest: replace=--n 9=>--n 1 -->\n```bash\necho hi\n```\n")
    with pytest.raises(ValueError, match=r"s\.md:2: replace marker '--n 9'"):
        apply_replaces(blocks[0])


def test_failing_block_names_the_command(tmp_path: Path) -> None:
    blocks, _ = parse_blocks(Path("f.md"), "```bash\ntrue\nfalse --flag\necho never\n```\n")
    proc = run_block(dataclasses.replace(blocks[0], path=ROOT / "f.md"), tmp_path)
    assert proc.returncode != 0 and "false --flag" in proc.stderr and "never" not in proc.stdout
