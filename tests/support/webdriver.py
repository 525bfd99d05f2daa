"""A small W3C WebDriver client over urllib, for headless Chromium in tests.

Debian's ``chromium`` and ``chromium-driver`` packages give ``/usr/bin/chromium``
and ``/usr/bin/chromedriver``; chromedriver speaks the W3C WebDriver HTTP
protocol, so a handful of JSON requests drive the browser without a Python
dependency.  Nothing is downloaded: ``find_chromium`` answers None where
either binary is missing and the caller skips.

    with Browser.start() as browser:
        browser.get("http://127.0.0.1:8080/")
        browser.wait_for("return document.title", timeout=10)
        browser.screenshot(path)
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver",)
CHROMIUM_ARGS = (
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
)


class WebDriverError(RuntimeError):
    """The driver answered with an error (its W3C error code and message)."""


def find_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is not installed."""
    browser = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)
    browser = browser or shutil.which("chromium")
    driver = next((p for p in DRIVER_CANDIDATES if Path(p).is_file()), None)
    driver = driver or shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One chromedriver process and one browser session in a fresh profile."""

    def __init__(self, driver: subprocess.Popen[bytes], base: str, profile: Path) -> None:
        self.driver, self.base, self.profile = driver, base, profile
        self.session = ""

    @classmethod
    def start(cls, width: int = 1400, height: int = 1000, timeout: float = 30.0) -> Browser:
        found = find_chromium()
        if found is None:
            raise RuntimeError("no chromium and chromedriver installed")
        binary, driver_path = found
        port = _free_port()
        profile = Path(tempfile.mkdtemp(prefix="jobsync-chromium-"))
        driver = subprocess.Popen(
            [driver_path, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        browser = cls(driver, f"http://127.0.0.1:{port}", profile)
        try:
            browser._await_driver(timeout)
            args = [*CHROMIUM_ARGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
            caps = {
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:chromeOptions": {"binary": binary, "args": args},
                    }
                }
            }
            browser.session = browser._call("POST", "/session", caps)["sessionId"]
        except BaseException:
            browser.close()
            raise
        return browser

    def _await_driver(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, WebDriverError, ValueError):
                if self._call("GET", "/status").get("ready"):
                    return
            if self.driver.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromedriver did not become ready within {timeout} s")
            time.sleep(0.05)

    def _call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                payload = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            value = payload.get("value", {})
            raise WebDriverError(f"{value.get('error')}: {value.get('message')}") from None
        return payload.get("value")

    def _session(self, method: str, path: str, body: object = None) -> Any:
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url: str) -> None:
        self._session("POST", "/url", {"url": url})

    def execute(self, script: str, *args: object) -> Any:
        """Run ``script`` (a function body: ``return ...``) in the page."""
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def wait_for(
        self, script: str, timeout: float, what: str = "", check: Callable[[Any], bool] = bool
    ) -> Any:
        """Run ``script`` until ``check`` accepts its value; AssertionError naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.execute(script)
            if check(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what or script}; last {value!r}"
                )
            time.sleep(0.1)

    def resize(self, width: int, height: int) -> None:
        """Set the window's size (headless: the viewport a screenshot shows)."""
        self._session("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path: Path) -> None:
        png = base64.b64decode(self._session("GET", "/screenshot"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)

    def close(self) -> None:
        if self.session:
            with contextlib.suppress(OSError, WebDriverError):
                self._session("DELETE", "")
            self.session = ""
        if self.driver.poll() is None:
            self.driver.terminate()
            try:
                self.driver.wait(10)
            except subprocess.TimeoutExpired:
                self.driver.kill()
                self.driver.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
