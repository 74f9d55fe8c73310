"""MLflow's UI in a real browser, as a person reviewing a sweep sees it.

A realistic sweep (3 losses × 3 seeds, 16 epochs of the MLP on 2,000 images of Debian's real Fashion-MNIST, where
cross-entropy overfits in every run and the bounded losses in fewer) runs into a fresh SQLite store; ``mlflow ui`` serves that
store on 127.0.0.1; Debian's Chromium, driven by Playwright (nothing downloaded), opens the links the sweep
printed. The screenshots illustrate docs/reviewing.md: ``LOSSBENCH_UPDATE_DOCS=1`` copies them there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ENV, read_runs
from servers import start_mlflow_ui

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
DOCS_FIGURES = REPO / "docs" / "figures" / "reviewing"
CHROMIUM = Path("/usr/bin/chromium")
# Chromium as root, headless, with nothing reaching out (the user data dir is a fresh temporary one).
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 30_000  # any one thing the page must show
LOSSES = ("ce", "mae", "nce_rce")
EPOCHS = 16
sys.path.insert(0, str(REPO / "scripts"))
import docs_screens  # noqa: E402  (the docs' sweep and how its closing screen is quoted: scripts/docs_screens.py)

SWEEP = [*docs_screens.SWEEP, "trainer.accelerator=cpu"]
assert f"trainer.max_epochs={EPOCHS}" in SWEEP and f"loss={','.join(LOSSES)}" in SWEEP


def run_sweep(tmp_path: Path, root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    store = tmp_path / "mlflow.db"
    overrides = [
        *SWEEP,
        f"data.root={root}",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={tmp_path / 'ckpt'}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "lossbench.train", "-m", *overrides],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done, store


def test_the_sweep_closing_screen_answers_and_its_log_can_be_followed(browser_sweep) -> None:
    done, store, tmp_path = browser_sweep
    screen = done.stdout
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^sweep \w+: 9 jobs — 9 finished, 0 failed, 0 killed, 0 skipped", screen, re.M)
    answer = re.search(r"^Best test accuracy: [\w /]+ \d+\.\d\d % \[\d+\.\d\d, \d+\.\d\d\].*$", screen, re.M)
    assert answer, screen[-3000:]
    assert re.search(r"Overfitting: ce / adam \(in 3/3 runs, after epochs? [\d–]+\)", answer[0]), answer[0]
    assert "Against ce on test accuracy (Holm over 2 comparisons, error rate 0.05): " in answer[0]
    for loss in LOSSES[1:]:
        assert re.search(rf"{loss} / adam [+-]\d+\.\d\d pp \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", answer[0]), loss
    assert "…" not in answer[0], "every difference with its interval, none hidden"
    assert "best val/acc" not in screen, "no single-seed 'best'"
    report = re.search(r"^report: (\S+)$", screen, re.M)[1]
    assert Path(report).is_absolute() and Path(report).is_file()
    ui = re.search(r"^ui:     (.+)$", screen, re.M)[1]
    assert ui.startswith(str(Path(sys.executable).parent / "mlflow") + " ui --backend-store-uri ")
    output = done.stdout + done.stderr
    assert output.count("open:   ") == 1 and output.count("ui:     ") == 1, "the links once per sweep"
    assert "srun" not in output, "Lightning's srun hint says nothing to this user"
    runs = {r.info.run_name for r in read_runs(store)[1] if r.data.tags.get("lossbench.kind") == "train"}
    epoch_lines = [line for line in output.splitlines() if re.search(rf"\] epoch \d+/{EPOCHS} ", line)]
    assert len(epoch_lines) == 9 * EPOCHS, "every epoch line of every job"
    assert all(re.search(r"\[([\w.-]+)\] epoch", line)[1] in runs for line in epoch_lines), "each labelled with its run"


def test_the_docs_quote_the_closing_screen_this_sweep_prints(browser_sweep) -> None:
    """README.md and docs/reviewing.md quote this sweep's closing screen (scripts/docs_screens.py writes it, naming
    its commit): a number the sweep no longer prints fails here; rerun the script to refresh the docs."""
    done, _, tmp_path = browser_sweep
    screen = docs_screens.screen_of(done.stdout, tmp_path)
    assert docs_screens.differences(screen) == [], "\n".join(screen)


def test_the_printed_links_show_the_runs_the_answer_and_the_overfitting(browser_sweep) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    done, store, tmp_path = browser_sweep
    screen = done.stdout
    sweep_link = re.search(r"^open:\s+(http://127\.0\.0\.1:5000/\S+)", screen, re.M)[1]
    answer_link = re.search(r"^answer:\s+(http://127\.0\.0\.1:5000/\S+)", screen, re.M)[1]
    curves_link = re.search(r"^curves:\s+(http://127\.0\.0\.1:5000/\S+)", screen, re.M)[1]
    client, runs = read_runs(store)
    parent = next(r for r in runs if r.data.tags.get("lossbench.kind") == "sweep")
    trained = [r for r in runs if r.data.tags.get("lossbench.kind") == "train"]
    overfitting = next(r for r in trained if r.data.tags["verdict"] == "overfits")
    note = parent.data.tags["mlflow.note.content"].split("\n\n")[0].removeprefix("**Answer.** ")
    answer = re.sub(r"\\(.)", r"\1", note)  # what a reader sees of the Markdown
    shots = tmp_path / "screenshots"
    shots.mkdir()

    with start_mlflow_ui(f"sqlite:///{store}", tmp_path / "ui") as ui, sync_playwright() as playwright:

        def here(link: str) -> str:  # the printed links name mlflow ui's default port; this one has its own
            return link.replace("http://127.0.0.1:5000", ui.base)

        browser = playwright.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-", dir=tmp_path),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            timeout=60_000,
            viewport={"width": 1600, "height": 900},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)

            # 1. The sweep's link: its runs, in the model-training view, as a fresh browser shows it (Assistant open).
            page.goto(here(sweep_link))
            parent_row = page.locator(".ag-row", has_text=parent.info.run_name)
            expect(parent_row).to_be_visible()
            expect(page.get_by_role("heading", name="Runs")).to_be_visible()
            page.screenshot(path=shots / "1-sweep-runs-as-opened.png")
            close_assistant(page)
            parent_row.locator("button").first.click()  # the parent's expander: its runs nest under it
            for run in trained[:3]:
                expect(page.get_by_role("link", name=run.info.run_name)).to_be_visible()
            page.screenshot(path=shots / "1-sweep-runs.png")

            # 2. The sweep's own run: its description answers above MLflow's fold, fits the pane, links nothing.
            for width in (1600, 1280):
                page.set_viewport_size({"width": width, "height": 900})
                page.goto(here(answer_link))
                paragraph = page.locator(".note-editor-preview-content p").first
                expect(paragraph).to_contain_text("Answer.")
                expect(paragraph).to_contain_text(answer[:60])
                assert_answer_shows_folded(page, paragraph, answer.split(". Against")[0])
                assert_description_fits(page, width)
                page.screenshot(path=shots / f"2-sweep-answer-{width}.png")
            page.get_by_text("Show more").first.click()
            overview = page.locator('img[src*="report%2Foverview.png"]')
            expect(overview).to_be_visible()
            assert page.evaluate("(img) => img.naturalWidth", overview.element_handle()) <= 554
            assert_description_fits(page, 1280)
            page.set_viewport_size({"width": 1600, "height": 1000})
            page.screenshot(path=shots / "2-sweep-report.png", full_page=True)

            # 3. The curves link: overfitting on one scale for every loss, grouped by loss.
            page.set_viewport_size({"width": 1600, "height": 1350})
            page.goto(here(curves_link))
            expect(page.get_by_text("Group: mae")).to_be_visible()
            for metric in ("overfit/val_nll_rise", "overfit/nll_drift", "overfit/gap_acc", "overfit/gap_nll"):
                title = page.locator(f'h4[title="{metric}"]')
                title.scroll_into_view_if_needed()
                expect(title).to_be_visible()
                for loss in LOSSES:
                    expect(page.get_by_text(f"{loss} ({metric})", exact=True)).to_be_visible()
            expect(page.locator("h4[title]")).to_have_count(4)
            page.mouse.wheel(0, -2000)
            page.screenshot(path=shots / "3-overfitting-by-loss.png")

            # 4. A run that overfits: its learning curves, from its artifacts.
            page.set_viewport_size({"width": 1600, "height": 900})
            run_url = f"{ui.base}/#/experiments/{parent.info.experiment_id}/runs/{overfitting.info.run_id}?workflowType=machine_learning"
            page.goto(run_url)
            page.get_by_role("tab", name="Artifacts").click()
            page.get_by_text("figures", exact=True).click()
            page.get_by_text("learning_curves.png", exact=True).click()
            image = page.locator('img[src^="blob:"]').first
            expect(image).to_be_visible()
            page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            page.screenshot(path=shots / "4-run-learning-curves.png")
        except Exception:
            page.screenshot(path=shots / "failure.png")  # what the page showed when an expectation failed
            raise
        finally:
            browser.close()

    if os.environ.get("LOSSBENCH_UPDATE_DOCS") == "1":
        DOCS_FIGURES.mkdir(parents=True, exist_ok=True)
        for old in DOCS_FIGURES.glob("*.png"):
            old.unlink()
        for shot in sorted(shots.glob("*.png")):
            if shot.name != "failure.png":
                shutil.copyfile(shot, DOCS_FIGURES / shot.name)


def assert_answer_shows_folded(page, paragraph, best: str) -> None:
    """The answer's first sentence (the best group, its accuracy and interval) lies inside the part of the folded
    description MLflow shows (its first 100 px): the text up to its end, measured as a range of the paragraph."""
    box = page.evaluate(
        """([p, best]) => {
            let fold = p; while (fold && getComputedStyle(fold).maxHeight === 'none') fold = fold.parentElement;
            const text = p.textContent, end = text.indexOf(best) + best.length;
            const walker = document.createTreeWalker(p, NodeFilter.SHOW_TEXT);
            let seen = 0, node, range = document.createRange();
            range.setStart(p, 0);
            while ((node = walker.nextNode())) {
                if (seen + node.length >= end) { range.setEnd(node, end - seen); break; }
                seen += node.length;
            }
            const f = fold.getBoundingClientRect(), r = range.getBoundingClientRect();
            return {bottom: r.bottom - f.top, visible: f.height, found: text.indexOf(best)};
        }""",
        [paragraph.element_handle(), best],
    )
    assert box["found"] >= 0 and box["bottom"] <= box["visible"] + 1, f"the best group is cut by the fold: {box}"


def assert_description_fits(page, width: int) -> None:
    """Nothing in the description is wider than its pane, and no link sits in a table cell."""
    found = page.evaluate(
        """() => {
            const pane = document.querySelector('.note-editor-preview-content');
            const limit = pane.getBoundingClientRect().right + 1;
            const wide = [...pane.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > limit)
                .map(e => e.tagName + ' ' + Math.round(e.getBoundingClientRect().width));
            return {wide, pane: pane.getBoundingClientRect().width, scroll: pane.scrollWidth - pane.clientWidth,
                    cellLinks: pane.querySelectorAll('td a').length};
        }"""
    )
    assert found["wide"] == [] and found["scroll"] <= 1, f"at {width} px the description overflows: {found}"
    assert found["cellLinks"] == 0, "no link inside a table cell (an interval read as a link)"


def close_assistant(page) -> None:
    """Close MLflow's assistant panel, which a fresh browser opens beside every page."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


@pytest.fixture(scope="module")
def browser_sweep(tmp_path_factory, fashion_root):
    tmp_path = tmp_path_factory.mktemp("browser")
    done, store = run_sweep(tmp_path, fashion_root)
    return done, store, tmp_path
