"""``bertrt demo`` used as a person uses it: a real headless Chromium types, clicks and reads.

The page is the installed command (``python -m bertrt demo``) on a free
loopback port over a tiny trained run; the browser is the system's Chromium
and chromedriver (Debian's ``chromium`` and ``chromium-driver``; ``.ci/run``
installs them), driven by selenium, so nothing is downloaded at run time.
Without a browser, selenium or gradio the test skips and says which is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

from bertrt.artifacts import RunDir
from bertrt.demo import EMPTY
from tests.conftest import make_trained_run

MAX_LENGTH = 32
QUESTION = "How do I convert a string to a list in python? My loop crashes with an index error."
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        return "no chromium + chromedriver on PATH (apt-get install chromium chromium-driver)"
    for module, extra in (("selenium", "dev"), ("gradio", "demo")):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_demo(run: RunDir, port: int, log: Path) -> subprocess.Popen[bytes]:
    """``bertrt demo`` on ``port``; returns once it printed its address (fails with its log)."""
    cmd = [sys.executable, "-m", "bertrt", "demo", "--run-dir", str(run.root), "--model",
           "merged", "--port", str(port), "--set", f"model.max_length={MAX_LENGTH}"]  # fmt: skip
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "True"}  # the demo must turn it off itself
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while f"http://127.0.0.1:{port}/" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"bertrt demo did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return process


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver: Any, condition: Any, what: str, timeout_s: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(condition, message=f"waited for {what}")


def _classify(driver: Any, text: str) -> str:
    """Type ``text`` into the question box, click Classify, return the new message."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, "#text textarea")
    box.clear()
    box.send_keys(text)
    before = driver.find_element(By.ID, "message").text
    driver.find_element(By.ID, "classify").click()
    _wait(
        driver,
        lambda d: (
            d.find_element(By.ID, "message").text not in ("", before)
            and not d.find_elements(By.CSS_SELECTOR, "#label .pending, #message .pending")
        ),
        f"the message to change from {before!r}",
    )
    return str(driver.find_element(By.ID, "message").text)


def _shown_prediction(driver: Any) -> tuple[str | None, dict[str, float]]:
    """The label the page shows and the probability behind each class's bar."""
    from selenium.webdriver.common.by import By

    heading = driver.find_elements(By.CSS_SELECTOR, "#label [data-testid='label-output-value']")
    bars = driver.find_elements(By.CSS_SELECTOR, "#label meter")
    probabilities = {
        bar.get_attribute("aria-label"): float(bar.get_attribute("value")) for bar in bars
    }
    return (heading[0].text if heading else None), probabilities


def _external_requests(driver: Any) -> list[str]:
    """Every http(s) request the page made that did not go to this machine's loopback."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return [u for u in urls if urlparse(u).scheme in ("http", "https", "ws", "wss")
            and urlparse(u).hostname not in ("127.0.0.1", "localhost")]  # fmt: skip


def _in_process(run: RunDir, text: str) -> dict[str, float]:
    from bertrt.config import load_config
    from bertrt.runners.run_model import RunModel

    config = load_config(overrides=[f"model.max_length={MAX_LENGTH}"])
    with RunModel.open(config, run, "merged") as model:
        probabilities = model.probabilities([model.text_of(text=text)])[0]
    return dict(zip(model.labels, map(float, probabilities), strict=True))


def test_a_person_classifies_questions_on_the_demo_page(
    tiny_base: Path, tmp_path: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    run = make_trained_run(tmp_path, tiny_base, rows=60)
    port = _free_port()
    process = _start_demo(run, port, tmp_path / "demo.log")
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#text textarea"), "the page")
        header = browser.find_element(By.ID, "model-info").text
        assert "merged" in header and "open, closed" in header, header

        message = _classify(browser, QUESTION)
        label, shown = _shown_prediction(browser)
        expected = _in_process(run, QUESTION)
        assert list(shown) == ["open", "closed"] and label == max(shown, key=shown.__getitem__)
        np.testing.assert_allclose(list(shown.values()), list(expected.values()), atol=1e-4)
        assert label in message and " ms" in message and "merged" in message, message
        browser.save_screenshot(str(tmp_path / "demo.png"))

        assert _classify(browser, "   \n  ") == EMPTY
        assert _shown_prediction(browser) == (None, {})  # no label left from the last answer

        long_message = _classify(browser, "why does my code crash " * 40)
        assert f"longer than max_length = {MAX_LENGTH} tokens" in long_message, long_message

        browser.find_element(
            By.CSS_SELECTOR, ".gallery-item, [data-testid='examples'] button"
        ).click()
        _wait(
            browser,
            lambda d: d.find_element(By.CSS_SELECTOR, "#text textarea").get_attribute("value"),
            "an example in the box",
        )
        assert _external_requests(browser) == []
    finally:
        process.terminate()
        code = process.wait(timeout=30)
    assert code == 0, (tmp_path / "demo.log").read_text()[-2000:]
    assert (tmp_path / "demo.png").stat().st_size > 10_000
