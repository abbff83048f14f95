"""The experiment page in a real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium), against a running embedded world: it loads, shows the live split,
and shows the new one after the route file is edited; a screenshot is kept (printed path
under the test's tmp dir; with MODELROUTE_DOCS_SCREENSHOT=1 also docs/experiment-page.png).

Its actions over HTTP: read-only without a token; with one, promote/abort need it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.e2e.harness import dest, infer, route, running, server, write_manifests
from tests.support import REPO, free_port

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
# Without the background-networking flags Chromium waits on this machine's closed network.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1800")
T = TypeVar("T")


def _world(directory: Path, port: int, *, ab: tuple[int, int]) -> None:
    write_manifests(directory / "world.yaml", [
        infer("v1"), infer("v2"), server("v1", port=port, path="/v1/models/v1"),
        server("v2", port=port, path="/v1/models/v2")])
    _ab(directory, ab)
    write_manifests(directory / "canary.yaml", [route(
        "chat", path="/v1/chat", routes=[dest("v1"), dest("v2")],
        canary={"enabled": True, "trafficSplit": {"stable": 80, "canary": 20},
                "analysis": {"threshold": 90, "interval": "2s", "stepWeight": 20, "minRequests": 5}})])


def _ab(directory: Path, weights: tuple[int, int]) -> float:
    return write_manifests(directory / "ab.yaml", [route("ab", path="/v1/ab", routes=[dest("v1", weights[0]),
                                                                                     dest("v2", weights[1])])])


@asynccontextmanager
async def _traffic(port: int) -> AsyncIterator[None]:
    """Chat answers (some streamed) to both routes until the block ends."""
    async def loop() -> None:
        body = {"model": "llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            n = 0
            while True:
                n += 1
                payload = {**body, "stream": True, "stream_options": {"include_usage": True}} if n % 2 else body
                for path in ("/v1/ab/v1/chat/completions", "/v1/chat/completions"):
                    async with session.post(f"http://127.0.0.1:{port}{path}", json=payload) as response:
                        await response.read()
                await asyncio.sleep(0.02)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class Browser:
    """Selenium's calls block: each runs in a thread, so the control plane serving the
    page (same event loop) keeps answering."""

    def __init__(self, profile: Path) -> None:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        self._options = options
        self.driver: webdriver.Chrome | None = None

    async def __aenter__(self) -> Browser:
        self.driver = await asyncio.to_thread(webdriver.Chrome, service=Service(CHROMEDRIVER), options=self._options)
        self.driver.set_page_load_timeout(20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.driver is not None:
            await asyncio.to_thread(self.driver.quit)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def text_of(self, css: str) -> str | None:
        assert self.driver is not None
        found = await self.call(self.driver.find_elements, By.CSS_SELECTOR, css)
        return await self.call(lambda: found[0].text) if found else None

    async def wait_text(self, css: str, expected: str, *, timeout: float) -> float:
        started = time.monotonic()
        seen = None
        while time.monotonic() - started < timeout:
            try:
                seen = await self.text_of(css)
            except WebDriverException:  # the page re-rendered under us: look again
                seen = None
            if seen == expected:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
        raise AssertionError(f"{css} shows {seen!r}, not {expected!r}, after {timeout}s")


async def test_the_page_shows_the_live_split_and_follows_an_edit(tmp_path: Path) -> None:
    port = free_port()
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    _world(manifests, port, ab=(80, 20))
    async with running(manifests) as app, _traffic(port):
        url = f"http://127.0.0.1:{app.admin_port}/experiments"
        async with Browser(tmp_path / "chromium-profile") as browser:
            assert browser.driver is not None
            await browser.call(browser.driver.get, url)
            assert await browser.call(lambda: browser.driver.title) == "modelroute experiments"  # type: ignore[union-attr]
            await browser.wait_text('[data-split="default/ab|default/v1"]', "80%", timeout=10)
            await browser.wait_text('[data-split="default/ab|default/v2"]', "20%", timeout=2)
            # The canary's rollout: phase, the A/B report (both variants), no buttons (read-only).
            await browser.wait_text('[data-route="default/chat"] [data-phase]', "Progressing", timeout=10)
            await browser.wait_text('[data-route="default/chat"] tr[data-variant="canary"] td', "canary: default/v2",
                                    timeout=15)
            assert not await browser.call(browser.driver.find_elements, By.CSS_SELECTOR, "button[data-action]")
            # Edit the route file: the page shows the new split (compile + the page's 2 s poll).
            _ab(manifests, (30, 70))
            took = await browser.wait_text('[data-split="default/ab|default/v1"]', "30%", timeout=6)
            await browser.wait_text('[data-split="default/ab|default/v2"]', "70%", timeout=2)
            print(f"the page showed the edited split {took:.2f}s after the file was written")
            charts = await browser.call(browser.driver.find_elements, By.CSS_SELECTOR,
                                        '[data-route="default/ab"] .uplot')
            assert len(charts) == 5  # requests/s, success, p95, time to first token, tokens/s
            await asyncio.sleep(2.5)  # one more poll: the charts carry the new split's traffic
            shot = tmp_path / "experiment-page.png"
            assert await browser.call(browser.driver.save_screenshot, str(shot))
            print(f"screenshot: {shot}")
            if os.environ.get("MODELROUTE_DOCS_SCREENSHOT") == "1":
                shutil.copyfile(shot, REPO / "docs" / "experiment-page.png")
    assert shot.stat().st_size > 10_000


async def _post(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.post(url, headers=headers or {}) as response:
            return response.status, await response.json()


async def test_actions_are_off_by_default_and_need_the_token_when_on(tmp_path: Path) -> None:
    port = free_port()
    for token, directory in ((None, tmp_path / "read-only"), ("s3cret-token", tmp_path / "actions")):
        directory.mkdir()
        _world(directory, port, ab=(80, 20))
        async with running(directory, experiment_token=token) as app:
            base = f"http://127.0.0.1:{app.admin_port}/api/v1/experiments"
            async with aiohttp.ClientSession() as session:
                async with session.get(base) as response:
                    doc = await response.json()
            assert doc["actions"]["enabled"] is (token is not None)
            assert [r["name"] for r in doc["routes"]] == ["chat", "ab"]  # rollouts first
            status, body = await _post(f"{base}/default/chat/abort", {"Authorization": "Bearer s3cret-token"})
            if token is None:
                assert status == 403 and "read-only" in body["message"]
                continue
            assert (await _post(f"{base}/default/chat/abort"))[0] == 401
            assert (await _post(f"{base}/default/chat/abort", {"Authorization": "Bearer wrong"}))[0] == 401
            assert status == 200 and body["ok"], body
            assert app.canary.runner.states[next(iter(app.canary.runner.states))].phase == "RolledBack"
            status, body = await _post(f"{base}/default/chat/abort", {"Authorization": f"Bearer {token}"})
            assert status == 409 and "already RolledBack" in body["message"]
            status, body = await _post(f"{base}/default/chat/pause", {"Authorization": f"Bearer {token}"})
            assert status == 400
