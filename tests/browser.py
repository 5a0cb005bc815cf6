"""A headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`):
no websocket library, no driver download. Used by the site's browser test."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--remote-debugging-pipe"]
PAGE_FACTS = """JSON.stringify({
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  images: Array.from(document.images).map(i => ({src: i.src, ok: i.complete && i.naturalWidth > 0,
                                                   alt: i.alt})),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  text: document.body.innerText,
  height: document.documentElement.scrollHeight,
  width: document.documentElement.scrollWidth
})"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One Chromium process and one page (a flattened CDP session)."""

    def __init__(self, binary: str, profile: Path, width: int = 1366, height: int = 900) -> None:
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        # the child reads commands on fd 3 and writes replies on fd 4 (a shell moves them there)
        a, b = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        for fd in (cmd_r, out_w):
            os.close(fd)
        shell = f'exec 3<&{a} 4>&{b} {a}<&- {b}>&-; exec "$0" "$@"'
        self.proc = subprocess.Popen(["bash", "-c", shell, binary, *FLAGS, f"--user-data-dir={profile}",
                                      "about:blank"], pass_fds=(a, b), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(a)
        os.close(b)
        self.write_fd, self.read_fd = cmd_w, out_r
        self.replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=True)

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg and msg["id"] in self.replies:
                    self.replies[msg["id"]].put(msg)
                else:
                    self.events.put(msg)

    def call(self, method: str, params: dict | None = None, session: bool = False,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        box = self.replies[self.next_id] = queue.Queue()
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        try:
            reply = box.get(timeout=timeout)
        finally:
            self.replies.pop(msg["id"], None)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str, timeout: float = 30.0) -> tuple[dict, list[str]]:
        """Load a page; its facts (links, images, ids, text, size) and the errors it reported."""
        while not self.events.empty():
            self.events.get_nowait()
        self.call("Page.navigate", {"url": url}, session=True)
        errors: list[str] = []
        deadline = time.monotonic() + timeout
        loaded = False
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=max(0.05, deadline - time.monotonic()))
            except queue.Empty:
                break
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Page.loadEventFired":
                loaded = True
                break
            errors += _error_of(method, params)
        if not loaded:
            errors.append(f"{url}: no load event within {timeout} s")
        time.sleep(0.05)
        while not self.events.empty():
            ev = self.events.get_nowait()
            errors += _error_of(ev.get("method"), ev.get("params", {}))
        got = self.call("Runtime.evaluate", {"expression": PAGE_FACTS, "returnByValue": True}, session=True)
        return json.loads(got["result"]["value"]), errors

    def screenshot(self, path: Path, full: bool = False, height: int | None = None) -> None:
        params: dict = {"format": "png"}
        if full and height:
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": 1366, "height": min(height, 6000), "scale": 1})
        data = self.call("Page.captureScreenshot", params, session=True, timeout=60)["data"]
        Path(path).write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, queue.Empty, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self.write_fd, self.read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _error_of(method: str | None, params: dict) -> list[str]:
    if method == "Runtime.exceptionThrown":
        return [f"exception: {params.get('exceptionDetails', {}).get('text')}"]
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        return [f"console.{params['type']}: " + " ".join(str(a.get("value", a.get("description")))
                                                         for a in params.get("args", []))]
    if method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        return [f"log: {entry.get('text')} {entry.get('url', '')}"]
    return []
