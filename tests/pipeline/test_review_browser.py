"""The review page in a real browser (Debian's Chromium driven by Playwright): reject a member with the keyboard,
reload and find the verdict kept, undo, then `review apply` and check the shards no longer hold the set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - playwright is a test dependency
    sync_playwright = None

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Chromium (Debian: apt-get install -y chromium; .ci/run installs it) and playwright",
)


@pytest.fixture()
def review_server(mini_output, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(mini_output, out)
    server = subprocess.Popen([sys.executable, "-m", "pipeline", "review", str(out), "--reviewer", "ann", "--port", "0"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = server.stdout.readline()
    if not line.startswith("review: http://127.0.0.1:"):
        server.kill()
        pytest.fail(f"review server did not start: {line}{server.stderr.read()}")
    try:
        yield out, line.split()[1]
    finally:
        server.terminate()
        server.wait(30)


def _member_keys(out: Path) -> set[str]:
    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    return {sample["__key__"] for sample in wds.WebDataset(urls, shardshuffle=False)}


def test_reject_a_member_with_the_keyboard_reload_and_apply(review_server):
    out, url = review_server
    expect.set_options(timeout=20_000)  # a loaded machine (the other xdist worker's Ray run) answers slowly
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url)
        expect(page.locator("#progress")).to_contain_text("reviewed 0 / 14 sets")
        page.select_option("#f-status", "accepted")
        expect(page.locator("#set-status")).to_have_text("automatic: accepted")
        set_id = page.locator("#set-id").inner_text()
        first = page.locator(".card.member").first
        member_id = first.get_attribute("data-member-id")
        assert any(k.startswith(f"{set_id}-") for k in _member_keys(out))

        page.keyboard.press("1")  # pick the first member
        expect(first).to_have_class("card member selected")
        page.keyboard.press("x")  # reject it: the reason box opens
        expect(page.locator("#dialog")).to_have_class("open")
        page.keyboard.press("3")  # "artifacts or distortion"
        expect(first).to_have_attribute("data-verdict", "reject")
        expect(page.locator("#progress")).to_contain_text("reviewed 1 / 14 sets")
        if os.environ.get("COUNTERFACTORY_SCREENSHOT"):
            page.screenshot(path=os.environ["COUNTERFACTORY_SCREENSHOT"])

        page.reload()  # saved at once: a restart resumes past the reviewed set
        page.wait_for_load_state("networkidle")  # the keys act once the page's script has its sets
        expect(page.locator("#progress")).to_contain_text("reviewed 1 / 14 sets")
        expect(page.locator("#set-id")).not_to_have_text(set_id)
        page.keyboard.press("a")  # accept the set shown, then undo it
        expect(page.locator("#progress")).to_contain_text("reviewed 2 / 14 sets")
        page.keyboard.press("u")
        expect(page.locator("#progress")).to_contain_text("reviewed 1 / 14 sets")
        for _ in range(14):  # back to the reviewed set: the verdict is still there
            if page.locator("#set-id").inner_text() == set_id:
                break
            page.keyboard.press("k")
            page.wait_for_timeout(150)
        expect(page.locator("#set-id")).to_have_text(set_id)
        card = page.locator(f'.card.member[data-member-id="{member_id}"]')
        expect(card).to_have_attribute("data-verdict", "reject")
        expect(card.locator(".why")).to_have_text("you: reject (artifacts or distortion)")
        browser.close()

    applied = subprocess.run([sys.executable, "-m", "pipeline", "review", "apply", str(out)], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
    assert applied.returncode == 0, applied.stderr
    assert not any(k.startswith(f"{set_id}-") for k in _member_keys(out))
    verified = subprocess.run([sys.executable, "-m", "pipeline", "verify", str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout
