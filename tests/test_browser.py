"""A real browser against the launched app: Debian's Chromium driven by Playwright.

The browser is the system's (``apt-get install chromium`` puts it at /usr/bin/chromium); ``playwright install``
is never run, as it downloads browsers. Without Chromium the test fails with a clear message in CI (CI=true)
and is skipped elsewhere. The app runs as a user gets it (the default model store: the bundled checkpoints, or
random weights of the cpu preset). What a user reads is checked as a user sees it: the whole names of the
uploads, the baselines' names, no server path, session id, commit hash or pointer to the repository's
documents on any tab, the Evaluate table's numbers on one line each, and the Train tab's steps as the steps
box counts them. The screenshots of the tabs are written to docs/screenshots/ (app.png, the README's, is the
Fuse tab's), palette-reduced to stay small in the repository's history.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

import app
from fusion_core import read_image, write_dicom_secondary_capture

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
MAX_SCREENSHOT_BYTES = 300_000
SLOW = 180_000  # ms: a fusion on a busy 2-core CPU
VIEWPORT = {"width": 1400, "height": 1000}
HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")  # a commit hash: hex, letters and digits
FORBIDDEN = ("docs/", "§", "TrainConfig", "runs/", "/tmp/", "/work", "/root", "/home/")
STEPS = 2000  # per stage: long enough to stop the run while it is in stage 1

pytestmark = pytest.mark.slow  # minutes: a launched app, a real browser, an evaluation and a training run


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The launched app's address and its work folder."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: install Debian's Chromium with `apt-get install -y chromium` (as root)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    work = tmp_path_factory.mktemp("work")
    demo = app.build_demo(app.FusionApp(work_dir=work))
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                **app.LAUNCH_OPTIONS)
    yield demo.local_url, work
    demo.close()


@pytest.fixture
def page(served):
    """A fresh page of the app, which records the session ids its requests send."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.sessions = set()

        def record(request):
            try:
                body = json.loads(request.post_data or "null")
            except (ValueError, UnicodeDecodeError):
                return
            if isinstance(body, dict) and body.get("session_hash"):
                page.sessions.add(body["session_hash"])

        page.on("request", record)
        page.goto(served[0])
        expect(page.locator("#fuse-button")).to_be_visible()
        yield page
        browser.close()


def long_named_pair(folder: Path) -> tuple[Path, Path]:
    """The first infrared + visible example under names longer than eight characters."""
    a, b = folder / "infrared_00040N.png", folder / "visible_00040N.png"
    shutil.copyfile(app.EXAMPLES / "ivf" / "ir" / "00040N.png", a)
    shutil.copyfile(app.EXAMPLES / "ivf" / "vi" / "00040N.png", b)
    return a, b


def dicom_pair(folder: Path) -> list[str]:
    """The first MRI + CT example written as two DICOM Secondary Capture files."""
    pair = sorted((app.EXAMPLES / "mri_ct" / "MRI").glob("*.png"))[0]
    paths = []
    for source, modality in ((pair, "MR"), (pair.parent.parent / "CT" / pair.name, "CT")):
        paths.append(str(folder / f"{modality}.dcm"))
        write_dicom_secondary_capture(paths[-1], read_image(source).pixels, modality_hint=modality)
    return paths


def shown_whole(page, selector: str) -> bool:
    """Whether the element is on screen, not clipped (its text fits its box) and not covered at its centre."""
    return page.locator(selector).first.evaluate("""element => {
        element.scrollIntoView({block: "center"});
        const box = element.getBoundingClientRect();
        const top = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
        return box.width > 0 && box.height > 0 && element.scrollWidth <= element.clientWidth + 1
            && top !== null && (top === element || element.contains(top));
    }""")


def check_visible_text(page, served, tab: str) -> None:
    """No server path, session id, commit hash or pointer to the repository's documents in the visible text."""
    text = page.locator("body").inner_text()  # rendered text only: closed accordions and other tabs are not in it
    url, work = served
    found = [word for word in (*FORBIDDEN, str(work)) if word in text]
    found += HASH.findall(text)
    sessions = {*page.sessions, *(p.name for p in (work / "sessions").glob("*/*"))}  # outputs/ID, uploads/ID
    found += [session for session in sessions if session in text]
    assert found == [], f"{tab} tab shows {found}"


def save_screenshot(page, name: str) -> Path:
    """The page as a 64-colour palette PNG in docs/screenshots/, scaled down by steps until it is under
    MAX_SCREENSHOT_BYTES."""
    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    while True:
        data = io.BytesIO()
        image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(data, format="PNG", optimize=True)
        if data.tell() <= MAX_SCREENSHOT_BYTES:
            break
        image = image.resize((image.width * 7 // 8, image.height * 7 // 8), Image.Resampling.LANCZOS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.write_bytes(data.getvalue())
    return path


def test_fuse_a_long_named_pair_then_a_dicom_pair_in_chromium(page, served, tmp_path, record_property):
    fuse = page.locator("#fuse-button")
    a, b = long_named_pair(tmp_path)

    # 1. the uploads' whole names
    for source, path in (("#source-a", a), ("#source-b", b)):
        page.locator(f"{source} input[type=file]").set_input_files(str(path))
        expect(page.locator(f"{source} .stem")).to_have_text(path.stem)
        assert shown_whole(page, f"{source} .stem") and shown_whole(page, f"{source} .ext"), path.name

    # 2. the fused image, the metric table, each baseline under its name; the maps when their accordion opens
    began = time.perf_counter()
    fuse.click()
    expect(page.locator("#fused-image img")).to_be_visible(timeout=SLOW)
    record_property("seconds_from_fuse_to_image_640x480", round(time.perf_counter() - began, 2))
    expect(page.locator("#metric-table table")).to_contain_text("guided_filter", timeout=SLOW)
    expect(page.locator("#metric-table")).to_contain_text("Scored with the standard conventions")
    captions = page.locator("#baselines .caption-label")
    expect(captions).to_have_text(["average", "max", "laplacian", "guided_filter"], timeout=SLOW)
    for index in range(4):
        assert shown_whole(page, f"#baselines .gallery-item:nth-child({index + 1}) .caption-label"), index
    page.locator("#maps").get_by_role("button").first.click()
    expect(page.locator("#maps img")).to_have_count(4, timeout=SLOW)  # weight map, gates, attention, experts
    expect(page.locator("#maps")).to_contain_text("Share of A", ignore_case=True)
    expect(page.locator("#maps")).to_contain_text("random noise")
    check_visible_text(page, served, "Fuse")
    fused = save_screenshot(page, "app")
    shutil.copyfile(fused, SCREENSHOTS / "fuse.png")

    # 3. a DICOM pair: the DICOM options appear, the summary and a DICOM download come back
    page.get_by_label("MRI + CT").check()
    mri, ct = dicom_pair(tmp_path)
    for source, path in (("#source-a", mri), ("#source-b", ct)):
        page.locator(source).get_by_role("button", name="Clear").click()
        page.locator(f"{source} input[type=file]").set_input_files(path)
    expect(page.get_by_text("DICOM window").first).to_be_visible(timeout=SLOW)
    fuse.click()
    expect(page.get_by_text("DICOM inputs")).to_be_visible(timeout=SLOW)
    expect(page.get_by_text(".dcm").first).to_be_visible()


def test_evaluate_and_about_show_plain_text_in_chromium(page, served):
    page.get_by_role("tab", name="Evaluate").click()
    page.get_by_role("button", name="Evaluate", exact=True).click()
    means = page.locator("#means-table table")
    expect(means).to_contain_text("guided_filter", timeout=SLOW)
    expect(page.get_by_text("Evaluated 2 pairs")).to_be_visible()
    lines = means.evaluate("""table => [...table.querySelectorAll('th, td')].map(cell => {
        const range = document.createRange();
        range.selectNodeContents(cell);
        const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
        return [cell.textContent.trim(), tops.size, getComputedStyle(cell).whiteSpace];
    })""")
    assert [cell for cell in lines if cell[1] > 1 or cell[2] != "nowrap"] == []  # no cell wraps
    assert means.evaluate("table => table.scrollWidth <= table.clientWidth + 1")  # it fits at 1400 px
    check_visible_text(page, served, "Evaluate")
    save_screenshot(page, "evaluate")

    page.get_by_role("tab", name="About").click()
    expect(page.get_by_text("The two models")).to_be_visible()
    check_visible_text(page, served, "About")
    save_screenshot(page, "about")
    page.locator("#model-cards").get_by_role("button").first.click()  # the full cards: one click away
    expect(page.locator("#model-cards")).to_contain_text("Metrics on MSRS test")


def test_train_counts_the_chosen_steps_and_stops_without_an_estimate_in_chromium(page, served):
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Steps per stage").fill(str(STEPS))
    page.get_by_role("button", name="Start training").click()
    progress = page.locator(".train-progress")
    expect(progress).to_contain_text(re.compile(rf"stage 1 of 2 \(the diffusion UNet\): step \d+ of {STEPS}\b"),
                                     timeout=SLOW)
    expect(progress).to_contain_text("left in this stage")
    check_visible_text(page, served, "Train")
    save_screenshot(page, "train")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text("was stopped at stage 1 of 2")).to_be_visible(timeout=SLOW)
    expect(progress).not_to_contain_text("left")
    expect(progress.locator("progress")).to_have_attribute("max", str(2 * STEPS))


def test_a_training_run_is_followed_to_its_checkpoint_in_chromium(page):
    """The Train tab's timer polls the run: its progress, then its end and its checkpoint, come back unasked."""
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("Steps per stage").fill("1")
    page.get_by_role("button", name="Start training").click()
    expect(page.get_by_text("finished (both stages, 1 step each)")).to_be_visible(timeout=SLOW)
    expect(page.locator(".train-progress")).to_contain_text("stage 2 of 2 (the fusion head): step 1 of 1")
    expect(page.locator(".train-progress progress")).to_have_attribute("value", "2")
    expect(page.get_by_text(".zip").first).to_be_visible()
