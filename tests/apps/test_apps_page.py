"""The web page at `/` in a real browser: Debian's Chromium, headless, driven by Playwright.

Playwright's own browser download cannot be reached here, so it launches the
system `chromium` by path (`make test` installs it). The test is skipped only
where Chromium is missing and apt cannot install it either; anywhere apt exists,
a missing browser is a failure, so CI can never skip it silently.

`VIDGRAPH_SCREENSHOT_DIR=docs pytest tests/apps/test_apps_page.py` refreshes
the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps_helpers import leftovers, upload
from playwright.sync_api import Browser, Page, expect, sync_playwright

from graphs.serve import RunningGraph

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        if shutil.which("apt-get"):
            pytest.fail(
                f"{CHROMIUM} is missing; `make install` installs it (apt-get install chromium)"
            )
        pytest.skip("no chromium, and no apt-get to install it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, graph: RunningGraph) -> Iterator[Page]:
    context = browser.new_context(viewport=PHONE, base_url=graph.base_url)
    page = context.new_page()
    page.set_default_timeout(90_000)
    page.goto("/")
    yield page
    context.close()


def ask(page: Page, video: Path, prompt: str) -> None:
    page.set_input_files("#file", str(video))
    page.fill("#prompt", prompt)
    page.click("summary")
    page.fill("#max_tokens", "10")
    page.fill("#temperature", "0")
    page.focus("#prompt")
    page.keyboard.press("Control+Enter")


def test_an_uploaded_video_streams_the_same_answer_as_the_api_into_the_page(
    page: Page,
    graph: RunningGraph,
    video: Callable[[int], Path],
    upload_dir: Path,
    tmp_path: Path,
) -> None:
    clip = video(21)
    api = upload(graph, clip.read_bytes(), prompt="What is this?", max_tokens=10, temperature=0)
    assert api.status_code == 200, api.text

    ask(page, clip, "What is this?")

    expect(page.locator("#status")).to_have_text("Done.")
    assert page.locator("#answer").text_content() == api.json()["text"]
    expect(page.locator("#stages li.done")).to_have_count(5)
    expect(page.locator("#history tbody tr")).to_have_count(1)
    expect(page.locator("#history tbody tr td").nth(2)).to_have_text("ok")
    expect(page.locator("#error")).to_be_hidden()
    fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert fits, "the page scrolls sideways at phone width"
    assert leftovers(upload_dir) == []
    shots = Path(os.environ.get("VIDGRAPH_SCREENSHOT_DIR", tmp_path))
    page.screenshot(path=str(shots / "web-page.png"), full_page=True)


def test_a_text_file_named_mp4_shows_the_servers_error(
    page: Page, tmp_path: Path, upload_dir: Path
) -> None:
    fake = tmp_path / "holiday.mp4"
    fake.write_text("this is not a video\n")

    ask(page, fake, "What is this?")

    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("not a usable video")
    expect(page.locator("#status")).to_have_text("Failed.")
    expect(page.locator("#history tbody tr td").nth(2)).to_contain_text("error")
    assert page.locator("#answer").text_content() == ""
    assert leftovers(upload_dir) == []
