"""The web page in a real browser: Debian's headless Chromium driven by Playwright (never
``playwright install``: it downloads). Opens the page with the token, launches a search on a smoke
run, waits for it, hovers a front point and reads the tooltip, selects it and downloads its export."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from service_helpers import Server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it "
                                             "with apt-get where apt is available; it was not here)")
def test_page_launch_search_hover_select_download(smoke_run, tmp_path):
    from playwright.sync_api import sync_playwright

    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(smoke_run, runs / "smoke", ignore=shutil.ignore_patterns("search", "train", "exports"))
    srv = Server(runs)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{srv.base}/?token={srv.token}")
            page.wait_for_selector("#runs a[href='#/run/smoke']")
            page.click("#runs a[href='#/run/smoke']")

            page.wait_for_selector("#search-form")
            page.fill("#search-form [name=max_macs]", "15M")
            page.select_option("#search-form [name=strategy]", "pareto")
            page.select_option("#search-form [name=config]", "smoke")
            page.click("#search-start")
            page.wait_for_function("document.querySelector('#search-state')?.textContent.trim() === 'running'",
                                   timeout=60_000)
            page.wait_for_function("document.querySelector('#search-state')?.textContent.trim() === 'done'",
                                   timeout=240_000)
            # the front, then the uniform-width baselines scored once the search is done
            page.wait_for_function("document.querySelector('#front')?.textContent.includes('uniform width')",
                                   timeout=120_000)
            page.wait_for_timeout(500)

            front = srv.request("GET", "/api/runs/smoke/front")[1]["front"]
            pos = page.evaluate("metaprunePointPosition(0)")
            page.mouse.move(pos["x"], pos["y"])
            page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
            tip = page.text_content(".hoverlayer .hovertext")
            cand = next(c for c in front if c["id"] == pos["id"])
            assert f"id {cand['id']}" in tip and "MACs" in tip and "proxy top-1" in tip, tip
            assert f"{100 * cand['top1']:.2f}%" in tip and "channels [" in tip, tip

            page.mouse.click(pos["x"], pos["y"])
            page.wait_for_function(f"document.querySelector('#selected')?.textContent.includes('candidate {cand['id']}')")
            with page.expect_download() as dl:
                page.click("#export-json")
            spec = json.loads(open(dl.value.path()).read())
            assert spec["channels"] == cand["channels"] and spec["metrics"]["macs"] == cand["macs"]

            shot = os.environ.get("METAPRUNE_SCREENSHOT") or str(tmp_path / "run-page.png")
            page.screenshot(path=shot, full_page=True)
            assert not errors, errors
            browser.close()
    finally:
        srv.stop()
