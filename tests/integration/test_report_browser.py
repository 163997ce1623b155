"""The quickstart's report in a real browser, offline; and `raybench compare` of two quickstart runs.

`raybench run` is driven through the CLI (on the session's local Ray) with the quickstart's
matrix and the simulator in fixed timing, so the report it writes at the end is the one a user
gets. Headless Chromium opens report.html with the network off (offline emulation and a dead
proxy), over the DevTools protocol: the test counts the charts Vega-Embed rendered, fails on
any console error or any request leaving the file, and saves a full-page screenshot.
scripts/install-chromium installs Chromium (the README's test command runs it first); only a
local run without it skips, and under CI (CI=1) it fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import aiohttp
import polars as pl
import pytest
from click.testing import CliRunner

from raybench.cli import main

EXPERIMENT = """
from raybench.experiment import Experiment, Offline, Online, SimBackend

experiment = Experiment(
    name="quickstart",
    model="deepseek-ai/DeepSeek-R1",
    backends=(SimBackend(name="sim-h200", timing="fixed", ttft_ms=20, itl_ms={itl}),),
    online=(Online(concurrency=(4, 16, 32), input_len=512, output_len=64, num_prompts=32),),
    offline={offline},
    seed=0,
    warmup_requests=1,
)
"""
QUICKSTART_OFFLINE = "(Offline(batch_sizes=(32, 128), input_len=512, output_len=64),)"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--proxy-server=http://127.0.0.1:9", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)
LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: scripts/install-chromium installs it (the README's test command runs it)")
    pytest.skip("chromium is not installed: run scripts/install-chromium (the README's test command does); "
                "in CI (CI=1) this test fails instead of skipping")


@pytest.fixture(scope="module")
def quickstart_runs(ray_local, tmp_path_factory):
    """Two runs through `raybench run`: the quickstart's matrix at ITL 2 ms (with its report),
    and its online cells at ITL 4 ms (no report: only compared)."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for itl, offline, report in ((2, QUICKSTART_OFFLINE, "--report"), (4, "()", "--no-report")):
        experiment = root / f"quickstart_itl{itl}.py"
        experiment.write_text(EXPERIMENT.format(itl=itl, offline=offline))
        result = CliRunner().invoke(main, ["run", str(experiment), "--out", str(root / f"itl{itl}"), report])
        assert result.exit_code == 0, result.output
        run_dir = Path(result.stdout.strip().splitlines()[-1])
        assert ("report: " in result.output) == (report == "--report") and "warning" not in result.output
        dirs.append(run_dir)
    return dirs


class DevTools:
    """Just enough of the Chrome DevTools protocol: commands with replies, events kept in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.events, self._next, self._pending = ws, [], 0, {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            else:
                self.events.append(data)

    async def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        reply = asyncio.get_running_loop().create_future()
        self._pending[self._next] = reply
        await self.ws.send_json(message)
        data = await asyncio.wait_for(reply, 60)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def evaluate(self, expression: str, session: str):
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        return result["result"].get("value")


async def open_offline(browser: str, html: Path, profile: Path, shot: Path) -> dict:
    """Load ``html`` with the network off; return what rendered, the errors and any request out."""
    process = subprocess.Popen([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.is_file() and len(port_file.read_text().splitlines()) >= 2:
                break
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as ws:
            cdp = DevTools(ws)
            target = (await cdp.send("Target.createTarget", {"url": "about:blank"}))["targetId"]
            session = (await cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
            for domain in ("Runtime", "Log", "Page", "Network"):
                await cdp.send(f"{domain}.enable", session=session)
            await cdp.send("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                                "downloadThroughput": -1, "uploadThroughput": -1}, session)
            await cdp.send("Emulation.setDeviceMetricsOverride",
                           {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False}, session)
            await cdp.send("Page.navigate", {"url": html.as_uri()}, session)
            rendered = None
            for _ in range(600):
                rendered = await cdp.evaluate("document.body ? document.body.dataset.chartsRendered || null : null", session)
                if rendered is not None:
                    break
                await asyncio.sleep(0.1)
            counts = await cdp.evaluate(
                "JSON.stringify({divs: document.querySelectorAll('div.chart').length,"
                " svgs: document.querySelectorAll('div.chart svg.marks').length,"
                " expected: Number(document.body.dataset.chartsExpected),"
                " rendered: Number(document.body.dataset.chartsRendered),"
                " title: document.title})", session)
            size = (await cdp.send("Page.getLayoutMetrics", session=session))["cssContentSize"]
            image = await cdp.send("Page.captureScreenshot", {
                "format": "png", "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 16000), "scale": 1},
            }, session)
            shot.write_bytes(base64.b64decode(image["data"]))
            await cdp.send("Browser.close")
            events = cdp.events
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    errors = [e["params"] for e in events if e.get("method") == "Runtime.exceptionThrown"]
    errors += [e["params"] for e in events if e.get("method") == "Runtime.consoleAPICalled"
               and e["params"]["type"] in ("error", "assert")]
    errors += [e["params"]["entry"] for e in events if e.get("method") == "Log.entryAdded"
               and e["params"]["entry"]["level"] == "error"]
    outside = [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"
               and not e["params"]["request"]["url"].startswith(LOCAL_SCHEMES)]
    return {**json.loads(counts), "errors": errors, "outside": outside}


def test_the_quickstart_report_opens_offline_with_every_chart(tmp_path, request):
    browser = chromium()  # before the runs: a skip (outside CI only) costs nothing
    run_dir = request.getfixturevalue("quickstart_runs")[0]
    html = run_dir / "report.html"
    text = html.read_text()
    specs = json.loads(text.split('id="raybench-specs">')[1].split("</script>")[0])
    # the quickstart draws 4 seed charts (no output-length sweep, no prefix cells) + 3 online drill-downs
    assert sorted(k for k in specs if k.startswith("chart-")) == [
        "chart-offline_throughput_vs_latency", "chart-online_throughput_vs_latency",
        "chart-tpot_vs_concurrency", "chart-ttft_vs_concurrency"]
    assert len([k for k in specs if k.startswith("cell-")]) == 3
    shot = tmp_path / "quickstart-report.png"
    seen = asyncio.run(open_offline(browser, html, tmp_path / "profile", shot))
    print(f"\nscreenshot of {html}: {shot}")
    assert seen["errors"] == [] and seen["outside"] == []
    assert seen["expected"] == seen["rendered"] == seen["divs"] == seen["svgs"] == len(specs) == 7
    assert seen["title"].startswith("raybench report: quickstart/")
    assert shot.stat().st_size > 50_000
    assert sorted(p.name for p in (run_dir / "charts").glob("*.png")) == sorted(
        f"{k.removeprefix('chart-')}.png" for k in specs if k.startswith("chart-"))


def test_compare_two_quickstart_runs(quickstart_runs, tmp_path):
    fast, slow = quickstart_runs
    result = CliRunner().invoke(main, ["compare", str(fast), str(slow), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    print("\n" + result.stdout)
    assert result.stdout.splitlines()[0].split()[:3] == ["series", "cell", "vs"]
    ratios = pl.read_csv(tmp_path / "cmp" / "ratios.csv")
    assert sorted(ratios["size"].to_list()) == [4, 16, 32]  # the online cells both runs have
    online = ratios.filter(pl.col("mode") == "online")
    # the second run streams every 4 ms instead of 2: TPOT about doubles (give or take a loaded
    # machine's jitter on 2 ms gaps), throughput drops
    assert all(1.4 < r < 3.0 for r in online["tpot_ratio"].to_list()), online
    assert all(r < 0.9 for r in online["throughput_ratio"].to_list()), online
    assert (tmp_path / "cmp" / "report.html").is_file()
    assert (tmp_path / "cmp" / "charts" / "online_throughput_vs_latency.svg").is_file()
    against_seed = CliRunner().invoke(main, ["compare", str(fast), "--reference", "published", "--no-images",
                                             "--out", str(tmp_path / "seed")])
    assert against_seed.exit_code == 0 and "no matching cells" in against_seed.stdout
