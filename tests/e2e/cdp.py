"""A headless Chromium driven over the Chrome DevTools protocol (its websocket, through aiohttp), for the
dashboard's tests: navigate, evaluate JavaScript in the page, take a screenshot. No driver library."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

import aiohttp


def chromium() -> str | None:
    """Debian's chromium (``make test-tools`` installs it when it can), or another on PATH."""
    return next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process, session: aiohttp.ClientSession, ws: Any) -> None:
        self.proc = proc
        self.session = session
        self.ws = ws
        self._ids = itertools.count(1)
        self._stderr: asyncio.Future[None] | None = None

    @classmethod
    async def launch(cls, binary: str, profile: Path) -> Browser:
        proc = await asyncio.create_subprocess_exec(
            binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", f"--user-data-dir={profile}", "--remote-debugging-port=0",
            "--window-size=1200,900", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(30):
                while not (found := re.search(rb"ws://127\.0\.0\.1:(\d+)/", await proc.stderr.readline())):
                    pass
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        port = int(found.group(1))
        session = aiohttp.ClientSession()
        async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json()
        page = next(t for t in targets if t["type"] == "page")
        ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        browser = cls(proc, session, ws)
        browser._stderr = asyncio.ensure_future(browser._drain_stderr())  # Chromium's chatter, never read
        await browser.call("Page.enable")
        return browser

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        with contextlib.suppress(Exception):
            while await self.proc.stderr.readline():
                pass

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events arriving meanwhile are skipped)."""
        call_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        async with asyncio.timeout(30):
            while True:
                message = json.loads((await self.ws.receive()).data)
                if message.get("id") == call_id:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    result: dict[str, Any] = message.get("result", {})
                    return result

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (JSON-able)."""
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def screenshot(self, path: Path) -> None:
        data = (await self.call("Page.captureScreenshot", format="png"))["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        await self.session.close()
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self._stderr is not None:
            await asyncio.gather(self._stderr, return_exceptions=True)
