"""The README's and docs/serving.md's shell walkthroughs, run as written, in order, in a fresh folder.

Every fenced ``bash`` block becomes part of one script run by bash with ``set -euo pipefail``
in an empty temporary folder that holds only links to the repository's ``data`` and
``benchmarks``, with this environment's ``retailgan`` and ``python`` on the PATH (what
``. .venv/bin/activate`` gives). Changes to the commands, all listed in :data:`FASTER` and
:data:`SKIP`:

* where the docs give a faster option, the test takes it (fewer tuning trials, a dry-run image
  model, one training epoch, a short conformance run);
* the server listens on a free port instead of 8000, and ``curl`` fails on an HTTP error;
* commands that need ``../shared`` or the reader's own files say so in the docs, and are
  skipped by that marker; the install steps are done already (this environment), and the test
  command would run this test again.

A command fails the test when it exits non-zero or prints a traceback or an ``error:`` line.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "serving.md"]

SKIP: dict[str, str] = {
    "# needs ../shared": "reads ../shared/data",
    "# your own files": "needs the reader's own files",
    "-m pytest": "the test command (it would run this test again)",
}
"""A command containing the key is skipped, for the reason given."""

FASTER: list[tuple[str, str]] = [
    (r"^python3 -m venv \.venv && \.venv/bin/pip install [^&]+&& \.venv/bin/", ""),  # installed already
    (r"retailgan demo --out out$", "retailgan demo --out out --tune-trials 1"),
    (r"--tune-trials 20", "--tune-trials 2"),
    (r"--time-budget 28", "--dry-run"),
    (r"--model (resgan|featgan) --out", r"""--model \1 --params '{"epochs": 1}' --out"""),
    (r"bench_schemathesis\.sh (\S+) 300", r"bench_schemathesis.sh \1 15"),
    (r"\bcurl -s ", "curl -sS --fail-with-body "),
]
"""(pattern, replacement) applied to every command, in order."""


def shell_blocks(path: Path) -> list[str]:
    """The fenced ``bash`` blocks of a markdown file, in order."""
    return re.findall(r"^```bash\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def commands(block: str) -> list[str]:
    """Logical commands of a block (continuation lines joined), comments kept on their command."""
    out: list[str] = []
    pending = ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if not line.rstrip().endswith("\\"):
            out.append(pending.rstrip("\n"))
            pending = ""
    if pending:
        out.append(pending.rstrip("\n"))
    return out


FOREGROUND = "a server in the foreground (the README's walkthrough runs it in the background)"


def _background(cmd: str) -> bool:
    return cmd.split("#")[0].rstrip().endswith("&")


def walkthrough(port: int) -> tuple[list[str], list[tuple[str, str]]]:
    """The commands to run (rewritten) and the skipped ones with their reason."""
    run, skipped = [], []
    for doc in DOCS:
        for block in shell_blocks(doc):
            for cmd in commands(block):
                reason = next((why for key, why in SKIP.items() if key in cmd), None)
                if reason is None and cmd.startswith("retailgan serve") and not _background(cmd):
                    reason = FOREGROUND
                if reason:
                    skipped.append((cmd, reason))
                    continue
                for pattern, repl in FASTER:
                    cmd = re.sub(pattern, repl, cmd, flags=re.M)
                run.append(cmd.replace("8000", str(port)))
    return run, skipped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_walkthrough_parsing():
    cmds = commands("a \\\n  b\n# comment\n\nc  # trailing\n")
    assert cmds == ["a \\\n  b", "c  # trailing"]
    run, skipped = walkthrough(12345)
    assert any(c.startswith("retailgan demo --out out --tune-trials 1") for c in run)
    assert not any("8000" in c for c in run) and any("12345" in c for c in run)
    assert any("kill $SERVER" in c for c in run)
    assert all("../shared" not in c for c in run)
    assert {why for _, why in skipped} <= {*SKIP.values(), FOREGROUND}


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_readme_walkthrough_runs_as_written(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    run, _ = walkthrough(_free_port())
    for name in ("data", "benchmarks"):
        (tmp_path / name).symlink_to(ROOT / name)
    lines = ["set -euo pipefail", "trap 'echo \"### failed: $BASH_COMMAND\" >&2' ERR",
             "trap 'kill ${SERVER:-} 2>/dev/null || true' EXIT"]
    for n, cmd in enumerate(run, 1):
        first = cmd.splitlines()[0].replace("'", "")[:100]
        lines += [f"echo \"### $SECONDS s\" '[{n}/{len(run)}] {first}' >&2", cmd]
    lines.append('echo "### $SECONDS s end" >&2')
    script = tmp_path / "walkthrough.sh"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    env.pop("RETAILGAN_API_KEYS", None)
    # The image commands read the bundled subset, whether or not ../shared holds the full set
    # (the evaluator trains for minutes on the full set).
    env["RETAILGAN_FASHION_MNIST"] = str(ROOT / "data" / "fashion-mnist")
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=2300)
    output = proc.stdout  # both streams, in order
    tail = "\n".join(output.splitlines()[-60:])
    assert proc.returncode == 0, f"the walkthrough failed (exit {proc.returncode}):\n{tail}"
    assert "Traceback" not in output, tail
    assert not re.search(r"^error:", output, flags=re.M), tail
    # Seconds per command (shown with pytest -s): what a new user waits for each step.
    marks = re.findall(r"^### (\d+) s (.*)$", output, flags=re.M)
    for (t0, what), (t1, _) in itertools.pairwise(marks):
        print(f"{int(t1) - int(t0):5d} s  {what}")
