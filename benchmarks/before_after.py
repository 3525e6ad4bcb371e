"""Run one benchmark on two versions of repid, alternating, in one run: the working tree
("after") and a git revision ("before", checked out into a temporary worktree).

    python benchmarks/before_after.py --base 1b7097d --rounds 3 -- inmemory.py --jobs 50000

Each round runs the script once on each side, in a fresh interpreter that imports that
side's `repid` and `repid_plugins` (and that side's `benchmarks/common.py`); the outputs
are printed one after the other, labelled, so the figures of both sides come from the same
stretch of time on the same machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def worktree(revision: str) -> Path:
    """A detached checkout of `revision` in a temporary directory."""
    path = Path(tempfile.mkdtemp(prefix="repid-before-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force",
                    str(path), revision], check=True, capture_output=True)
    return path


def run(tree: Path, script: str, args: list[str]) -> str:
    """The output of `tree`/benchmarks/`script` run against `tree`'s packages."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / script), *args],
                          env=env, cwd=tree, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        return f"(exit {done.returncode})\n{done.stdout}{done.stderr[-2000:]}"
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git revision measured as 'before'")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("script", help="a script in benchmarks/, e.g. inmemory.py")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    options = parser.parse_args()
    before = worktree(options.base)
    try:
        for round_ in range(1, options.rounds + 1):
            for label, tree in (("before", before), ("after", ROOT)):
                what = options.base if tree is before else "working tree"
                print(f"=== round {round_}, {label} ({what})")
                print(run(tree, options.script, options.args), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(before)],
                       check=False, capture_output=True)


if __name__ == "__main__":
    main()
