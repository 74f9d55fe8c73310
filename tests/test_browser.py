"""MLflow's UI in a real browser, as a person reviewing a sweep sees it.

A 2-job sweep runs into a fresh SQLite store; ``mlflow ui`` serves that store on 127.0.0.1; Debian's
Chromium, driven by Playwright (nothing downloaded), opens the links the sweep and its runs printed.
The screenshots it takes illustrate docs/reviewing.md: ``LOSSBENCH_UPDATE_DOCS=1`` copies them there.
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
from conftest import read_runs, tiny_overrides
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


def run_sweep(tmp_path: Path, root: Path) -> tuple[subprocess.CompletedProcess, Path]:
    store = tmp_path / "mlflow.db"
    overrides = [o for o in tiny_overrides(root, store, "trainer.max_epochs=3") if not o.startswith("analysis.figures")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "lossbench.train", "-m", *overrides, "loss=ce,mae"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    return done, store


def first_table_header(markdown: str) -> list[str]:
    """The header cells of the first Markdown table in ``markdown``."""
    line = next(line for line in markdown.splitlines() if line.startswith("| "))
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def test_the_printed_links_show_the_runs_the_report_and_the_curves(tiny_mnist: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it: apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    done, store = run_sweep(tmp_path, tiny_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    screen = done.stdout
    assert f"ui:     mlflow ui --backend-store-uri sqlite:///{store} --port 5000" in screen
    links = re.findall(r"open:\s+(http://127\.0\.0\.1:5000/\S+)", screen)
    sweep_link = next(link for link in links if "searchFilter" in link)
    run_links = [link for link in links if "/runs/" in link and "searchFilter" not in link]
    answer_link = re.search(r"^answer:\s+(http://127\.0\.0\.1:5000/\S+)", screen, re.MULTILINE)[1]
    curves_link = re.search(r"^curves:\s+(http://127\.0\.0\.1:5000/\S+)", screen, re.MULTILINE)[1]

    client, runs = read_runs(store)
    trained = {r.info.run_name: r for r in runs if r.data.tags.get("lossbench.kind") == "train"}
    parent = next(r for r in runs if r.data.tags.get("lossbench.kind") == "sweep")
    assert len(trained) == 2 and len(run_links) == 2
    assert f"/runs/{parent.info.run_id}?" in answer_link
    sweep_id = parent.data.tags["sweep_id"]
    report_md = (tmp_path / "reports" / f"lossbench-{sweep_id}" / "report.md").read_text()
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
            viewport={"width": 1400, "height": 900},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            expect.set_options(timeout=WAIT_MS)

            # 1. The sweep's link: its runs, filtered, in the model-training view (not the GenAI overview).
            page.goto(here(sweep_link))
            parent_row = page.locator(".ag-row", has_text=parent.info.run_name)
            expect(parent_row).to_be_visible()
            expect(page.get_by_role("heading", name="Runs")).to_be_visible()
            expect(page.get_by_text("No data available")).to_have_count(0)
            expect(page.locator(f"input[value=\"tags.sweep_id = '{sweep_id}'\"]")).to_be_visible()
            close_assistant(page)
            parent_row.locator("button").first.click()  # the parent's expander: its runs nest under it
            for name in trained:
                expect(page.get_by_role("link", name=name)).to_be_visible()
            page.screenshot(path=shots / "1-sweep-runs.png")

            # 2. The sweep's own run (the "answer:" link): its description is the report, table and figures.
            page.goto(here(answer_link))
            expect(page.get_by_text("Description")).to_be_visible()
            more = page.get_by_text("Show more")
            if more.count():
                more.first.click()
            header = first_table_header(report_md)
            table = page.locator("table").filter(has_text=header[-1]).first
            expect(table.locator("th")).to_have_text(header)
            for loss in ("ce", "mae"):
                expect(table.locator("td", has_text=re.compile(f"^{loss}$")).first).to_be_visible()
            curves = page.locator('img[src*="report%2Fcurves.png"]')
            expect(curves).to_be_visible()
            assert page.evaluate("(img) => img.naturalWidth", curves.element_handle()) > 0, "the curve grid renders"
            page.screenshot(path=shots / "2-sweep-report.png")

            # 3. The runs grouped by loss, as charts filtered to the NLL yardsticks.
            page.goto(here(sweep_link))
            expect(parent_row).to_be_visible()
            page.get_by_role("button", name="Group by").click()
            page.get_by_text("loss", exact=True).first.click()
            page.keyboard.press("Escape")
            expect(page.get_by_text("Group: ce")).to_be_visible()
            page.locator('input[value="CHART"]').dispatch_event("click")
            page.get_by_placeholder("Search metric charts").fill("^(val|train_eval)/nll$")  # the search takes a regex
            page.set_viewport_size({"width": 1400, "height": 1350})
            expect_nll_charts_by_loss(page)
            page.mouse.wheel(0, -2000)
            page.screenshot(path=shots / "3-grouped-nll-charts.png")

            # 3b. The sweep's "curves:" link opens that view with no click (a shared view the sweep saved).
            page.goto(here(curves_link))
            expect(page.get_by_text("Group: mae")).to_be_visible()
            expect_nll_charts_by_loss(page)
            page.set_viewport_size({"width": 1400, "height": 900})

            # 4. A training run's link: its learning curves render from the artifacts.
            page.goto(here(run_links[0]))
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
        for shot in sorted(shots.glob("*.png")):
            shutil.copyfile(shot, DOCS_FIGURES / shot.name)


def expect_nll_charts_by_loss(page) -> None:
    """Exactly two charts, train_eval/nll and val/nll, each with one line per loss (the mean of its runs)."""
    from playwright.sync_api import expect

    for metric in ("train_eval/nll", "val/nll"):
        title = page.locator(f'h4[title="{metric}"]')
        title.scroll_into_view_if_needed()
        expect(title).to_be_visible()
        for loss in ("ce", "mae"):
            expect(page.get_by_text(f"{loss} ({metric})", exact=True)).to_be_visible()
    expect(page.locator("h4[title]")).to_have_count(2)


def close_assistant(page) -> None:
    """Close MLflow's assistant panel, which a fresh browser opens beside every page."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
