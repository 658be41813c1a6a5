"""The report and the live page in a real headless browser (Debian's chromium + chromedriver, via selenium).

`make test` installs chromium, chromium-driver and selenium; if any is missing these tests fail with
what to install, they are never skipped. ``python tests/test_browser.py docs/`` retakes the screenshots
in docs/ from real runs.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedledger.report import build_report, write_report
from fedledger.report.live import LiveServer
from fedledger.sim.config import RunConfig, parse_config
from fedledger.sim.simulation import Simulation
from fedledger.sim.templates import demo_config

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "run `make test` (it installs them) or: apt-get install -y chromium chromium-driver"
# No network here: background networking, QUIC and component updates make chromium hang or log errors.
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


def new_driver(width: int = 1280, height: int = 900) -> Any:
    """A headless chromium with a fresh profile whose console messages can be read back."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"browser tests need {' and '.join(missing)}: {INSTALL_HINT}", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail(
            "browser tests need selenium in the venv: run `make test` (it installs .[dev])", pytrace=False
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="fedledger-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    driver._fedledger_profile = profile
    return driver


def quit_driver(driver: Any) -> None:
    driver.quit()
    shutil.rmtree(driver._fedledger_profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = new_driver()
    try:
        yield driver
    finally:
        quit_driver(driver)


def console_errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def attrs(driver: Any, selector: str, name: str = "data-round") -> list[str]:
    """An attribute of every match, read in one script call: the live page swaps its sections in place,
    so element handles kept across polls go stale."""
    script = (
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.getAttribute(arguments[1]));"
    )
    return list(driver.execute_script(script, selector, name))


def text(driver: Any, selector: str) -> str:
    script = "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';"
    return str(driver.execute_script(script, selector))


def dropout_config(rounds: int) -> RunConfig:
    """The demo consortium with hospital-d offline in round 2: the record then holds an exclusion."""
    raw = demo_config(rounds=rounds).model_dump(mode="json")
    raw["members"][3]["drop_out_rounds"] = [2]
    return parse_config(raw, "browser test")


def finished_run(out: Path, rounds: int) -> Path:
    sim = Simulation.create(dropout_config(rounds), out)
    try:
        sim.run()
    finally:
        sim.close()
    return out


class GatedRun:
    """A real simulation in a thread that stops after round ``pause_after`` is finalised until released.

    At most one round finalises per sweep of the actors, so pausing between sweeps holds the chain at
    exactly that round while the browser looks.
    """

    def __init__(self, sim: Simulation, pause_after: int) -> None:
        self.sim = sim
        self.paused = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        sweep = sim._sweep

        def gated_sweep() -> bool:
            progressed = sweep()
            if sim._finalised_rounds() == pause_after and not self.release.is_set():
                self.paused.set()
                self.release.wait(120)
            return progressed

        sim._sweep = gated_sweep  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.sim.run()
        except BaseException as exc:
            self.error = exc

    def start(self) -> GatedRun:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.release.set()
        self.thread.join(120)
        self.sim.close()
        if self.error is not None:
            raise self.error


def test_report_opens_without_console_errors_and_shows_every_round(browser: Any, tmp_path: Path) -> None:
    run = finished_run(tmp_path / "run", rounds=3)
    report = tmp_path / "report.html"
    write_report(build_report(run), report)
    browser.get(report.as_uri())
    assert console_errors(browser) == []
    rows = css(browser, "tr.round-row")
    assert [r.get_attribute("data-round") for r in rows] == ["1", "2", "3"]
    assert all(r.is_displayed() for r in rows)
    charts = css(browser, "svg.chart")
    assert len(charts) == 3 and all(c.is_displayed() for c in charts)
    assert all(c.size["width"] > 200 and c.size["height"] > 100 for c in charts)
    for kind in ("accuracy", "loss"):
        points = css(browser, f'circle.pt[data-kind="{kind}"]')
        assert sorted(p.get_attribute("data-round") for p in points) == ["1", "2", "3"]
    bars = css(browser, "rect.bar")
    assert [b.get_attribute("data-round") for b in bars] == ["1", "2", "3"]
    assert all(float(b.get_attribute("height")) > 0 for b in bars)
    assert "AUDIT PASSED" in css(browser, "#verdict")[0].text.upper()
    assert "not_submitted" in css(browser, '#rounds tr[data-round="2"]')[0].text
    assert len(css(browser, "tr.member-row")) == 4
    assert css(browser, "#provenance")[0].text.count("hospital-") >= 3
    assert console_errors(browser) == []


def test_live_page_shows_a_new_round_after_it_finalises(browser: Any, tmp_path: Path) -> None:
    server = LiveServer(0).start()
    try:
        sim = Simulation.create(demo_config(rounds=3), tmp_path / "run")
        server.follow(sim)
        run = GatedRun(sim, pause_after=1).start()
        try:
            browser.get(server.url)
            assert run.paused.wait(60), "the run never finalised round 1"
            wait_for(lambda: attrs(browser, "tr.round-row") == ["1"], 15, "round 1 on the live page")
            assert (
                len(attrs(browser, 'circle.pt[data-kind="accuracy"]')) <= 1
            )  # validators may not have posted yet
            browser.execute_script("window.__sameDocument = true;")
            run.release.set()
            wait_for(lambda: "2" in attrs(browser, "tr.round-row"), 30, "round 2 on the live page")
            wait_for(
                lambda: len(attrs(browser, 'circle.pt[data-kind="accuracy"]')) >= 2,
                30,
                "a second accuracy point",
            )
            assert browser.execute_script("return window.__sameDocument === true;"), "the page reloaded"
            assert len(attrs(browser, "rect.bar")) >= 2
        finally:
            run.finish()
        server.finish(tmp_path / "run")
        wait_for(
            lambda: "AUDIT PASSED" in text(browser, "#verdict").upper(), 30, "the audit verdict after the run"
        )
        assert attrs(browser, "tr.round-row") == ["1", "2", "3"]
        assert attrs(browser, "#report-link", "href") == ["report"]
        assert browser.execute_script("return window.__sameDocument === true;"), "the page reloaded"
        assert console_errors(browser) == []
    finally:
        server.close()


# ------------------------------------------------------------------------------------------ screenshots


def full_page_screenshot(driver: Any, target: Path) -> None:
    """The whole page, beyond the viewport, through the DevTools protocol."""
    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight];"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        },
    )
    target.write_bytes(base64.b64decode(shot["data"]))


def take_screenshots(docs: Path, rounds: int = 10) -> None:
    """docs/report.png: the report of a finished demo run; docs/dashboard.png: the live page mid-run."""
    docs = docs.resolve()
    docs.mkdir(parents=True, exist_ok=True)
    os.chdir(tempfile.mkdtemp(prefix="fedledger-shots-"))  # so the pages show the usual runs/demo
    work = Path("runs")
    driver = new_driver()
    server = LiveServer(0).start()
    try:
        sim = Simulation.create(demo_config(rounds=rounds), work / "demo")
        server.follow(sim)
        run = GatedRun(sim, pause_after=rounds * 6 // 10).start()
        try:
            assert run.paused.wait(300)
            driver.get(server.url)
            time.sleep(1.5)
            full_page_screenshot(driver, docs / "dashboard.png")
        finally:
            run.finish()
        report = work / "report.html"
        write_report(build_report(work / "demo"), report)
        driver.get(report.resolve().as_uri())
        full_page_screenshot(driver, docs / "report.png")
        print(f"wrote {docs / 'dashboard.png'} and {docs / 'report.png'} from {Path.cwd() / work / 'demo'}")
    finally:
        server.close()
        quit_driver(driver)


if __name__ == "__main__":
    take_screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
