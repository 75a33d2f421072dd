"""A real headless Chromium (Debian's package) driven over the DevTools protocol, for tests that render a page.

A pytest plugin (tests/conftest.py loads it). ``chromium_browser`` (a module-scoped fixture) installs Chromium through
``tests/cluster/chromium.sh install`` when ``/usr/bin/chromium`` is missing, starts it with a new
profile, and stops exactly the processes it started at the end. :meth:`Browser.open` loads a page
and returns what a person would see and what went wrong: console errors, uncaught exceptions,
errors the browser logged (a blocked resource, a Content-Security-Policy violation) and any request
for something that is neither the page's own file nor a ``data:`` URL.

The protocol is spoken through ``websocket-client`` (the ``test`` extra): one connection to the page,
each command answered by id, events kept in order. When Chromium cannot be had here (no apt, not
root) the fixture skips with the reason -- but fails under ``CI=true``, so CI never passes by skipping.
"""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().with_name("chromium.sh")
IMPOSSIBLE = 3  # chromium.sh's exit code for "cannot run on this machine"
#: the flags a root user needs on a closed network: without the background-networking ones Chromium
#: waits on requests that never get an answer.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _cannot(reason: str):
    message = f"headless Chromium unavailable: {reason}"
    if _in_ci():
        pytest.fail(f"{message} (CI=true: failing instead of skipping)", pytrace=False)
    pytest.skip(message)


def ensure_chromium() -> str:
    """The browser's path, installed through chromium.sh when missing (skip or fail where impossible)."""
    proc = subprocess.run(["bash", str(SCRIPT), "install"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=900)
    if proc.returncode == IMPOSSIBLE:
        _cannot(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "chromium.sh exit 3")
    if proc.returncode != 0:
        pytest.fail(f"chromium.sh install failed (exit {proc.returncode}):\n{proc.stderr}", pytrace=False)
    path = subprocess.run(["bash", str(SCRIPT), "path"], capture_output=True, text=True, timeout=60)
    if path.returncode != 0:
        _cannot(path.stderr.strip() or "chromium.sh path failed")
    return path.stdout.strip()


@dataclass
class Page:
    """What loading one page gave: its problems (empty when it loaded cleanly) and the browser's messages."""

    url: str
    errors: list[str] = field(default_factory=list)
    outside_requests: list[str] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)


class Browser:
    """One headless Chromium process with a fresh profile, and a DevTools connection to its page."""

    def __init__(self, executable: str, profile: Path, width: int = 1400, height: int = 1000):
        import websocket  # the test extra's websocket-client

        self.profile = profile
        self.log = (profile.parent / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "--remote-allow-origins=*", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port = self._port(timeout=60)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: never through a proxy
        targets = json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=30).read())
        page = next(target for target in targets if target["type"] == "page")
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True,
                                                  enable_multithread=False)
        self._next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _port(self, timeout: float) -> int:
        """The DevTools port Chromium chose, from the DevToolsActivePort file it writes into the profile."""
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited {self.process.returncode}: {self._log_tail()}")
            if marker.is_file():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.1)
        raise RuntimeError(f"chromium wrote no DevToolsActivePort in {timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self.log.flush()
        return "\n".join((self.profile.parent / "chromium.log").read_text(errors="replace").splitlines()[-20:])

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept in ``events``."""
        self._next_id += 1
        ident = self._next_id
        self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, event: str, since: int = 0, timeout: float = 60) -> dict:
        """The first event named ``event`` from ``events[since]`` on, waiting for it when it has not come yet."""
        deadline = time.monotonic() + timeout
        seen = since
        while True:
            for message in self.events[seen:]:
                if message["method"] == event:
                    return message
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {event} within {timeout} s")
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                message = json.loads(self.socket.recv())
            finally:
                self.socket.settimeout(60)
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, timeout: float = 60) -> Page:
        """Load ``url``, wait for its load event and its images, and report its problems."""
        start = len(self.events)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired", since=start, timeout=timeout)
        self.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
        time.sleep(0.5)  # late console messages and CSP reports
        self.evaluate("1")  # drains what arrived meanwhile into events
        page = Page(url, events=self.events[start:])
        for message in page.events:
            method, params = message["method"], message.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                page.errors.append(f"exception: {details.get('exception', {}).get('description') or details['text']}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                page.errors.append("console." + params["type"] + ": "
                                   + " ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                page.errors.append(f"log: {params['entry']['text']} ({params['entry'].get('url', '')})")
            elif method == "Network.loadingFailed":
                page.errors.append(f"failed to load: {params.get('errorText')} {params.get('blockedReason', '')}")
            elif method == "Network.requestWillBeSent":
                requested = params["request"]["url"]
                if requested != url and not requested.startswith("data:"):
                    page.outside_requests.append(requested)
        return page

    def screenshot(self, path: Path, max_height: int = 16000) -> Path:
        """The whole page (up to ``max_height`` CSS pixels) as a PNG file."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        """Stop the browser: the process group this object started, and nothing else."""
        try:
            self.socket.close()
        except Exception:  # noqa: BLE001 - closing a socket of a browser that may be gone
            pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=20)
        self.log.close()


#: screenshots the tests kept (:func:`keep_screenshot`), named in the terminal summary.
_SCREENSHOTS: list[tuple[str, Path]] = []


def keep_screenshot(what: str, path: Path) -> None:
    """Name a screenshot a test kept in the session's terminal summary."""
    _SCREENSHOTS.append((what, path))


def pytest_terminal_summary(terminalreporter):
    for what, path in _SCREENSHOTS:
        terminalreporter.write_line(f"screenshot of {what}: {path}")


@pytest.fixture(scope="module")
def chromium_browser():
    """A started headless Chromium (installed first when missing); stopped after the module."""
    try:
        import websocket  # noqa: F401 - the test extra's websocket-client speaks to the browser
    except ImportError:
        _cannot("websocket-client is not installed (pip install -e '.[test]')")
    executable = ensure_chromium()
    with tempfile.TemporaryDirectory(prefix="prunesweep-chromium-") as scratch:
        browser = Browser(executable, Path(scratch) / "profile")
        try:
            yield browser
        finally:
            browser.close()
