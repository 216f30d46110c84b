"""Headless Chromium (Debian's `chromium` package) driven over the Chrome DevTools protocol: one
browser process, one page, synchronous commands. No browser download, no driver: a websocket."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

STARTUP_TIMEOUT_S = 30.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_binary() -> str:
    """$LABELLOOP_CHROMIUM or `chromium` on PATH; missing is a failure, never a skip."""
    found = os.environ.get("LABELLOOP_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail("chromium is not installed: `apt-get install -y chromium` (.ci/run installs it)", pytrace=False)
    return found


class Page:
    """One tab, attached with a flat session: commands answered in order, events kept."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self.ws = ws
        self.session = session
        self.events: list[dict[str, Any]] = []
        self._next = 1000

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params or {}, "sessionId": self.session}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (promises awaited); a page exception fails."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise AssertionError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.evaluate("document.body && document.body.dataset.state")
                status = self.evaluate("document.getElementById('status')?.textContent")
                raise AssertionError(f"{what}: not within {timeout} s (state {state!r}, status {status!r})")
            time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def screenshot(self, path: Path, width: int = 1440) -> Path:
        """The whole page at a laptop's width, as PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def problems(self) -> list[str]:
        """Exceptions, console errors and CSP violations the page reported."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(f"console.error: {[a.get('value') for a in params.get('args', [])]}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                entry = params["entry"]
                # A 401 the page answers by asking for the key is expected; anything else is not.
                if "401" not in entry.get("text", ""):
                    found.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        return found


@contextmanager
def chromium(workdir: Path, width: int = 1440, height: int = 900) -> Iterator[Page]:
    """A headless Chromium with a throwaway profile; its one page attached and ready."""
    profile = workdir / "chromium-profile"
    profile.mkdir(exist_ok=True)
    log_path = workdir / "chromium.stderr"
    argv = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",  # root in CI; the page is our own
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    with log_path.open("w+b") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        try:
            url = _devtools_url(process, log_path)
            with connect(url, max_size=64 * 2**20, open_timeout=STARTUP_TIMEOUT_S) as ws:
                target = _browser_call(ws, "Target.createTarget", {"url": "about:blank"})["targetId"]
                session = _browser_call(ws, "Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
                page = Page(ws, session)
                for domain in ("Page", "Runtime", "Log"):
                    page.send(f"{domain}.enable")
                page.send(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                )
                yield page
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _devtools_url(process: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = _LISTENING.search(log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"chromium gave no DevTools address:\n{log_path.read_text(errors='replace')}")


def _browser_call(ws: ClientConnection, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """A command to the browser itself (no session), before any page is attached: ids below the
    pages' (1000 on)."""
    ident = 1 if method == "Target.createTarget" else 2
    ws.send(json.dumps({"id": ident, "method": method, "params": params}))
    while True:
        message = json.loads(ws.recv(timeout=STARTUP_TIMEOUT_S))
        if message.get("id") == ident:
            if "error" in message:
                raise AssertionError(f"{method}: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result
