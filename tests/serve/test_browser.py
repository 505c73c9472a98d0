"""The page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium)
against a real uvicorn server on loopback. It drops two real images (``../shared/data``; synthetic ones without it),
waits for both overlays, draws a box on one, undoes it, routes both as one dataset, downloads the ZIP and checks its
contents, and saves screenshots (``$MEDSEG_SCREENSHOTS`` or the test's temporary folder). ``$MEDSEG_SERVE_MODEL``
serves a real model (e.g. ``universal``) instead of the test-scale one."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
selenium = pytest.importorskip("selenium")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Chromium and chromedriver are not installed "
                                                                   "(Debian: apt-get install chromium chromium-driver)")
SHARED = Path(__file__).parents[2].parent / "shared" / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _two_images(tmp: Path) -> list[Path]:
    """A dermoscopy and an X-ray image from the shared data, or two synthetic phantoms."""
    picks = [SHARED / "dermoscopy" / "ph2" / "images", SHARED / "xray" / "covid19-cxr-lungs" / "images"]
    found = [sorted(p.glob("*"))[0] for p in picks if p.is_dir() and any(p.iterdir())]
    if len(found) == 2:
        return found
    from medseg.data import generate_dataset

    root = generate_dataset(tmp / "synth", per_modality=1, size=96, seed=3, modalities=("dermoscopy", "xray"))
    out = []
    for f in sorted(root.glob("*/*/images/*.png")):  # every phantom is case_000: names of their own, as real files
        out.append(tmp / f"{f.parents[2].name}_{f.name}")
        out[-1].write_bytes(f.read_bytes())
    return out


@pytest.fixture()
def server(tmp_path: Path, monkeypatch):
    import uvicorn

    from medseg.models.io import load_model
    from medseg.serve.app import create_app
    from medseg.serve.session import ResultStore, Segmenter
    from tests.inference.test_universal import make_tiny_universal
    from tests.training.test_embedding_data import tiny_lite_medsam_state

    model = os.environ.get("MEDSEG_SERVE_MODEL")  # a real model for the README's screenshots; else a tiny one
    if model is None:
        monkeypatch.setattr("medseg.weights.fetch_weights", tiny_lite_medsam_state)
        model = str(make_tiny_universal(tmp_path))
    app = create_app(Segmenter(load_model(model)), store=ResultStore(tmp_path / "srv"))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture()
def browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        opts.add_argument(flag)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.downloads = downloads
    yield driver
    driver.quit()


def _wait(fn, timeout: float = 60.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


DROP_JS = """
const [name, b64, done] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const dt = new DataTransfer();
dt.items.add(new File([bytes], name, {type: "image/png"}));
const zone = document.getElementById("drop");
for (const type of ["dragenter", "dragover", "drop"]) {
  zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
}
done();
"""


def test_drop_see_correct_and_download_in_a_real_browser(server: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    shots = Path(os.environ.get("MEDSEG_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    first, second = _two_images(tmp_path)
    browser.get(server + "/")
    _wait(lambda: "model: universal" in browser.find_element(By.ID, "model").text, what="the model line")
    # one image dropped onto the drop zone (a DataTransfer, as a file manager's drag gives), one chosen in the dialog
    browser.execute_async_script(DROP_JS, first.name, base64.b64encode(first.read_bytes()).decode())
    browser.execute_script("document.getElementById('files').style.display = 'block'")
    browser.find_element(By.ID, "files").send_keys(str(second))
    items = lambda: browser.find_elements(By.CSS_SELECTOR, "#gallery li")  # noqa: E731
    _wait(lambda: len(items()) == 2 and all(li.get_attribute("data-status") == "done" for li in items()),
          what="two segmented images")
    assert "2 / 2 segmented" in browser.find_element(By.ID, "progress-text").text
    _wait(lambda: browser.execute_script(
        "const c = document.getElementById('canvas'); return c.width > 0 && c.height > 0"), what="the canvas")
    facts = browser.find_element(By.ID, "facts").text
    assert "task" in facts and "engine" in facts and "area" in facts
    browser.save_screenshot(str(shots / "serve_overlays.png"))

    canvas = browser.find_element(By.ID, "canvas")
    w, h = canvas.size["width"], canvas.size["height"]
    ActionChains(browser).move_to_element_with_offset(canvas, int(-w * 0.2), int(-h * 0.2)).click_and_hold() \
        .move_by_offset(int(w * 0.35), int(h * 0.35)).release().perform()
    _wait(lambda: "lite_medsam_box" in browser.find_element(By.ID, "facts").text, what="the box-prompted mask")
    assert browser.find_element(By.ID, "undo").is_enabled()
    browser.save_screenshot(str(shots / "serve_box.png"))
    browser.find_element(By.ID, "undo").click()
    _wait(lambda: "lite_medsam_box" not in browser.find_element(By.ID, "facts").text, what="the undo")

    # the two images routed as one dataset: the page says what moved (or that nothing did)
    assert browser.find_element(By.ID, "batch").is_displayed()
    browser.find_element(By.ID, "route-batch").click()
    _wait(lambda: "re-routed" in browser.find_element(By.ID, "batch-text").text
          or "no image changed task (2 routed" in browser.find_element(By.ID, "batch-text").text,
          what="the batch routing line")

    browser.find_element(By.ID, "zip").click()
    path = _wait(lambda: next((p for p in browser.downloads.glob("*.zip")), None), what="the ZIP download")
    _wait(lambda: not list(browser.downloads.glob("*.crdownload")), what="the download to finish")
    names = zipfile.ZipFile(path).namelist()
    assert "results.csv" in names
    assert sorted(n for n in names if n.startswith("masks/")) == sorted(
        f"masks/{p.stem}_mask.png" for p in (first, second))
    mask = np.asarray(Image.open(zipfile.ZipFile(path).open(f"masks/{first.stem}_mask.png")))
    assert mask.shape[:2] == np.asarray(Image.open(first)).shape[:2]
    assert browser.get_log("browser") == [] or all(e["level"] != "SEVERE" for e in browser.get_log("browser"))
