"""The closing screen that docs/reviewing.md and README.md quote, made by running the docs' own sweep.

    uv run python scripts/docs_screens.py [--data-root /work/data] [--work DIR] [--check]

Runs docs/reviewing.md's sweep (:data:`SWEEP`: 3 losses × 3 seeds, 16 epochs of the MLP on 2,000 images of the real
Fashion-MNIST) in a fresh folder and writes what it printed at its end between the markers of each quoted block
(:data:`BLOCKS`): the whole closing screen in docs/reviewing.md, its answer in README.md. Each block's marker names
the commit that made it, so a number in the docs is one this command printed. ``--check`` writes nothing and exits 1
when a block differs from what the sweep printed now. tests/test_browser.py runs the same sweep and checks the
blocks against its screen (:func:`differences`). The screenshots of docs/reviewing.md come from that test
(``LOSSBENCH_UPDATE_DOCS=1``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEP = [
    "data=fashion_mnist",
    "model=mlp",
    "data.train_size=2000",
    "trainer.max_epochs=16",
    "loss=ce,mae,nce_rce",
    "seed=0,1,2",
]
"""docs/reviewing.md's sweep, as typed there (tests/test_browser.py runs it too)."""
HOME = "/home/me/lossbench"
"""Where the docs show the sweep ran (this machine's folders are replaced by it)."""
OWN = ("data.root", "tracking.uri", "tracking.checkpoint_dir", "trainer.accelerator", "launch.max_jobs")
"""Overrides a run here adds to :data:`SWEEP` (where the data and the store are): left out of what the docs show."""
BEGIN = re.compile(r"<!-- docs_screens: (\w+), made by scripts/docs_screens\.py at commit (\S+) -->\n")
END = "<!-- /docs_screens -->"
BLOCKS = ("docs/reviewing.md", "README.md")
"""The files that quote the closing screen: each marked block says what it quotes (``screen``: all of it,
``answer``: the answer paragraph alone)."""


def screen_of(output: str, work: Path) -> list[str]:
    """The closing screen in ``output`` (from its ``sweep <id>:`` line to the ``curves:`` line) as the docs show it:
    this machine's folders as :data:`HOME`, run ids shortened, the overrides of :data:`OWN` left out."""
    lines = output.splitlines()
    start = max(i for i, line in enumerate(lines) if re.match(r"sweep \w+: \d+ jobs", line))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("curves: "))
    text = "\n".join(lines[start : end + 1])
    text = text.replace(str(Path(sys.executable).parent / "mlflow"), f"{HOME}/.venv/bin/mlflow")
    text = text.replace(str(work.resolve()), HOME).replace(str(work), HOME)
    text = re.sub(r"\b([0-9a-f]{10})[0-9a-f]{22}\b", r"\1…", text)
    text = re.sub(r" '?(?:" + "|".join(map(re.escape, OWN)) + r")=[^ ']*'?", "", text)
    return text.splitlines()


def run_sweep(work: Path, data_root: str) -> str:
    """Run :data:`SWEEP` in ``work`` (its own store and checkpoints); what it printed."""
    overrides = [*SWEEP, f"data.root={data_root}", f"tracking.uri=sqlite:///{work / 'mlflow.db'}"]
    overrides.append(f"tracking.checkpoint_dir={work / 'ckpt'}")
    done = subprocess.run(
        [sys.executable, "-m", "lossbench.train", "-m", *overrides], cwd=work, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def quoted(screen: list[str], what: str) -> str:
    """What a block quotes of the screen: all of it, or the answer (the line after the counts)."""
    return "\n".join(screen) if what == "screen" else screen[1]


def blocks(text: str) -> list[tuple[str, str, str, int, int]]:
    """Each marked block of a file: (what it quotes, its commit, its text, start, end of the text)."""
    found = []
    for begin in BEGIN.finditer(text):
        fence = text.index("```\n", begin.end()) + 4
        close = text.index("\n```", fence)
        if not text[close:].lstrip("\n`").startswith(END):
            raise ValueError(f"a docs_screens block without its end marker {END} right after its fence")
        found.append((begin[1], begin[2], text[fence:close], fence, close))
    return found


def _masked(text: str) -> str:
    """A screen with what differs between two runs of the same sweep masked: the sweep id (from its command line,
    ``tracking.uri`` included) and the run ids."""
    sweep = re.match(r"sweep (\w+):", text)
    text = text.replace(sweep[1], "<sweep>") if sweep else text
    return re.sub(r"\b[0-9a-f]{10}…", "<run>…", text)


def differences(screen: list[str]) -> list[str]:
    """Where the docs' blocks quote something other than ``screen``: one line per block that differs."""
    out = []
    for name in BLOCKS:
        text = (REPO / name).read_text()
        found = blocks(text)
        if not found:
            out.append(f"{name}: no docs_screens block")
        for kind, commit, body, _, _ in found:
            if _masked(body) != _masked(quoted(screen, kind)):
                out.append(f"{name}: its {kind} (made at {commit}) is not what the sweep prints now")
    return out


def write(screen: list[str], commit: str) -> None:
    for name in BLOCKS:
        path = REPO / name
        text = path.read_text()
        for kind, _, _, fence, close in reversed(blocks(text)):
            text = text[:fence] + quoted(screen, kind) + text[close:]
        text = BEGIN.sub(
            lambda m: f"<!-- docs_screens: {m[1]}, made by scripts/docs_screens.py at commit {commit} -->\n", text
        )
        path.write_text(text)


def commit_of() -> str:
    head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "lossbench"], cwd=REPO, capture_output=True, text=True)
    return head.stdout.strip() + ("+modified" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="/work/data", help="where Fashion-MNIST is (data.root)")
    parser.add_argument("--work", type=Path, default=None, help="the sweep's folder (default: a fresh temporary one)")
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the docs differ")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="docs-screens-"))
    work.mkdir(parents=True, exist_ok=True)
    screen = screen_of(run_sweep(work.resolve(), args.data_root), work.resolve())
    print("\n".join(screen))
    if args.check:
        found = differences(screen)
        print("\n".join(found) or "the docs quote what the sweep prints")
        return 1 if found else 0
    write(screen, commit_of())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
