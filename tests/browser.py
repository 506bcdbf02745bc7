"""Headless Chromium driven over the DevTools protocol: open a page, seed its localStorage, wait for text, screenshot.

For the browser checks of the MLflow UI (tests/infra/test_mlflow_ui.py, bench/mlflow_ui_check.py). Needs Debian's
`chromium` (`apt-get install -y chromium`); `chromium_path()` is None without it, and callers skip. Talks to
127.0.0.1 only; the profile is a fresh temporary folder, removed afterwards.

    with Browser() as browser:
        browser.open("http://127.0.0.1:5000/", local_storage={"key": "value"})   # seeds the origin, then reloads
        text = browser.wait_for_text(["BLEU"], timeout=60)
        browser.screenshot(Path("page.png"))
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.infra.servers import free_port

WINDOW = (1600, 1000)


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Browser:
    """One headless Chromium with one page, closed (process and profile) on exit."""

    def __init__(self, window: tuple[int, int] = WINDOW) -> None:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no chromium on PATH: `apt-get install -y chromium` (Debian)")
        self.port = free_port()
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             f"--remote-debugging-port={self.port}", f"--user-data-dir={self.profile}",
             f"--window-size={window[0]},{window[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self._ids = itertools.count(1)
        self._ws = self._connect()
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _connect(self) -> Any:
        from websockets.sync.client import connect

        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as resp:
                    pages = [t for t in json.load(resp) if t.get("type") == "page"]
                if pages:
                    return connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"chromium did not open its DevTools port {self.port}")
            time.sleep(0.3)

    def call(self, method: str, params: Mapping[str, Any] | None = None, timeout: float = 60) -> dict[str, Any]:
        """Send one DevTools command and return its result (events arriving meanwhile are dropped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": dict(params or {})}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")

    def open(self, url: str, local_storage: Mapping[str, Any] | None = None) -> None:
        """Navigate to `url`; with `local_storage`, first set those keys (JSON-encoded) on its origin, then reload."""
        self.call("Page.navigate", {"url": url})
        if local_storage:
            self._wait_ready()
            for key, value in local_storage.items():
                self.evaluate(f"localStorage.setItem({json.dumps(key)}, {json.dumps(json.dumps(value))})")
            self.call("Page.navigate", {"url": "about:blank"})
            self.call("Page.navigate", {"url": url})
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise TimeoutError("the page did not finish loading")
            time.sleep(0.2)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def wait_for_text(self, needles: Sequence[str], timeout: float = 60) -> str:
        """The page's visible text once it holds every needle; TimeoutError naming the missing ones otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [n for n in needles if n not in text]
            if not missing:
                return text
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout:.0f} s the page lacks {missing}; it shows:\n{text[:3000]}")
            time.sleep(0.5)

    def links(self, label: str) -> list[dict[str, str]]:
        """Every link whose visible text is `label`: its href and target (a click on target _blank opens a tab)."""
        script = f"""JSON.stringify([...document.querySelectorAll('a')]
            .filter(a => a.innerText && a.innerText.trim() === {json.dumps(label)})
            .map(a => ({{href: a.getAttribute('href') || '', target: a.target || ''}})))"""
        return json.loads(self.evaluate(script) or "[]")

    def click_text(self, label: str) -> bool:
        """Click the first button or link whose visible text is `label`; False when there is none."""
        script = f"""(() => {{
            const el = [...document.querySelectorAll('button, a, [role=button], [role=tab], [role=menuitem]')]
                .find(e => e.innerText && e.innerText.trim() === {json.dumps(label)});
            if (!el) return false; el.click(); return true; }})()"""
        return bool(self.evaluate(script))

    def type_text(self, text: str, css: str = "input[type=text]", index: int = -1) -> None:
        """Focus the `index`-th element matching `css` (default: the last text input) and type `text` into it, as
        keystrokes do (frameworks that only listen to input events see it)."""
        focused = self.evaluate(f"""(() => {{ const all = [...document.querySelectorAll({json.dumps(css)})];
            const el = all.at({index}); if (!el) return false; el.focus(); return true; }})()""")
        if not focused:
            raise LookupError(f"no element matches {css!r} at index {index}")
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
