"""Screenshots of the MLflow UI a reviewer sees for a dtune study, taken in headless Chromium.

    python tools/screenshots.py --tracking-uri sqlite:///mlflow.db --experiment dtune-arith --out screenshots/
    python tools/screenshots.py --tracking-uri http://127.0.0.1:5000 --experiment dtune-arith --model arith-tiny

For a local store it starts `mlflow server` on a free loopback port over it (read only in practice: the UI only
reads); for an http URI it uses that server. Chromium (Debian: `apt-get install chromium`) is driven through the
DevTools protocol (aiohttp's websocket client; aiohttp comes with MLflow), so pages are shot once they have
rendered, and the runs table's parent row can be expanded to show the nested trials.

Shots: the experiment's runs with the study run expanded into its trials; the study run's overview (parameters,
metrics, tags); its artifacts with pareto.html and pareto.png open; one trial's run; pareto.html on its own; the
registered model and a version's tags when --model is given. A page that doesn't render within the timeout is shot
as it is and reported. Prints one line per file.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def start_server(tracking_uri: str, log: Path) -> tuple[subprocess.Popen | None, str]:
    """The UI's base URL: the server itself for an http URI, else a fresh `mlflow server` over the local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return None, tracking_uri.rstrip("/")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    if not wait_http(url + "/health", 180):
        os.killpg(proc.pid, signal.SIGTERM)
        raise SystemExit(f"mlflow server did not start; see {log}")
    return proc, url


class Page:
    """One Chromium tab over the DevTools protocol: navigate, wait for a condition, run JS, shoot."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads((await self.ws.receive()).data)
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    async def wait_for(self, condition: str, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await self.js(f"Boolean({condition})"):
                return True
            await asyncio.sleep(0.5)
        return False

    async def shoot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


def body_has(*texts: str) -> str:
    return " && ".join(f"document.body && document.body.innerText.includes({json.dumps(t)})" for t in texts)


# Expand the study run's row in the runs table (MLflow nests child runs under a collapsed parent row: the
# expander is the icon button in the run-name cell).
EXPAND_PARENT = """(() => {
  const b = document.querySelector('button[data-component-id*="runnamecellrenderer"]');
  if (b) { b.click(); return true; }
  return false;
})()"""

# What a reviewer does first: the "Model training" side of the UI (runs, not GenAI traces), and the assistant
# panel closed (it takes a third of the window).
SET_UP = """(() => {
  const buttons = [...document.querySelectorAll('button')];
  const training = buttons.find(b => b.innerText.trim() === 'Model training');
  if (training) training.click();
  const close = buttons.find(b => b.getAttribute('aria-label') === 'Close');
  if (close) close.click();
  return Boolean(training);
})()"""


def click_text(text: str) -> str:
    """Click the innermost element showing exactly `text` (a file in the artifact tree)."""
    return f"""(() => {{
  const nodes = [...document.querySelectorAll('body *')].filter(n => n.textContent.trim() === {json.dumps(text)});
  if (!nodes.length) return false;
  nodes[nodes.length - 1].click();
  return true;
}})()"""


# The embedded pareto.html has drawn (the artifact view shows HTML in a same-origin iframe).
# Its document may not be readable from the page, so the frame's presence is what is waited for, then a settle.
IFRAME_PLOT = "document.querySelector('iframe')"


def ready_text(*texts: str) -> str:
    return body_has(*texts) + " && !document.body.innerText.includes('Loading...')"


async def take(base: str, shots: list[dict], out: Path, width: int, height: int, timeout_s: float) -> list[str]:
    import aiohttp

    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not chrome:
        raise SystemExit("no chromium found (Debian: apt-get install chromium)")
    port = free_port()
    profile = tempfile.mkdtemp(prefix="dtune-chromium-")
    proc = subprocess.Popen([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                             f"--remote-debugging-port={port}", f"--user-data-dir={profile}",
                             f"--window-size={width},{height}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    report = []
    try:
        if not wait_http(f"http://127.0.0.1:{port}/json/version", 60):
            raise SystemExit("chromium did not start")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
            target = next(t for t in json.load(r) if t.get("type") == "page")
        async with aiohttp.ClientSession() as session, session.ws_connect(
                target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                            mobile=False)
            await page.call("Page.navigate", url=base + "/")
            await page.wait_for(body_has("Model training"), timeout_s)
            await asyncio.sleep(2.0)
            await page.js(SET_UP)
            for shot in shots:
                await page.call("Page.navigate", url=shot.get("url") or base + shot["path"])
                ok = await page.wait_for(shot["ready"], timeout_s)
                for action in shot.get("actions", []):
                    await asyncio.sleep(1.0)
                    ok = bool(await page.js(action)) and ok
                    await asyncio.sleep(1.0)
                if shot.get("after"):
                    ok = await page.wait_for(shot["after"], timeout_s) and ok
                await asyncio.sleep(shot.get("settle_s", 1.5))  # charts and iframes draw after the text
                path = out / shot["file"]
                await page.shoot(path)
                report.append(f"{path}  {shot['what']}" + ("" if ok else "  (NOT fully rendered in time)"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    return report


def plan(tracking_uri: str, experiment: str, model: str | None) -> list[dict]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment {experiment!r} in {tracking_uri}")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    parents = [r for r in runs if r.data.tags.get("dtune.run_type") == "study"]
    if not parents:
        raise SystemExit(f"experiment {experiment!r} holds no dtune study run")
    parent = parents[0]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    trial = next((t for t in trials if not t.data.tags.get("dtune.reference")), trials[0] if trials else None)
    e, p = exp.experiment_id, parent.info.run_id
    name = parent.info.run_name
    shots = [
        {"file": "01-runs-nested-trials.png", "what": "the experiment's runs, the study run expanded into its trials",
         "path": f"/#/experiments/{e}/runs", "ready": ready_text(name), "actions": [EXPAND_PARENT],
         "after": body_has("trial-")},
        {"file": "02-study-run-overview.png", "what": "the study run: parameters, metrics, tags",
         "path": f"/#/experiments/{e}/runs/{p}", "ready": ready_text("Parameters", "task")},
        {"file": "03-study-run-pareto-html.png", "what": "the study run's artifacts, pareto.html embedded",
         "path": f"/#/experiments/{e}/runs/{p}/artifacts", "ready": ready_text("pareto.html"),
         "actions": [click_text("pareto.html")], "after": IFRAME_PLOT, "settle_s": 8.0},
        {"file": "04-study-run-pareto-png.png", "what": "the study run's artifacts, pareto.png",
         "path": f"/#/experiments/{e}/runs/{p}/artifacts", "ready": ready_text("pareto.png"),
         "actions": [click_text("pareto.png")], "after": "document.querySelector('main img, [role=main] img, img[alt*=\"pareto\"]')",
         "settle_s": 3.0},
        {"file": "05-study-run-front-json.png", "what": "the study run's artifacts, front.json",
         "path": f"/#/experiments/{e}/runs/{p}/artifacts", "ready": ready_text("front.json"),
         "actions": [click_text("front.json")], "after": body_has("knee_trial"), "settle_s": 2.0},
    ]
    # pareto.html on its own, as a reviewer who downloads it sees it (the server sends artifacts as attachments)
    local = Path(client.download_artifacts(p, "pareto.html", tempfile.mkdtemp(prefix="dtune-shots-")))
    shots.append({"file": "07-pareto-html-alone.png", "what": "pareto.html opened on its own (full width)",
                  "url": local.resolve().as_uri(), "ready": "document.querySelector('.plot-container')",
                  "settle_s": 3.0})
    if trial is not None:
        shots.insert(5, {"file": "06-trial-run.png", "what": f"a nested trial run ({trial.info.run_name})",
                         "path": f"/#/experiments/{e}/runs/{trial.info.run_id}",
                         "ready": ready_text("Parameters", "accuracy")})
    if model:
        shots += [
            {"file": "08-registered-model.png", "what": f"registered model {model}: versions and aliases",
             "path": f"/#/models/{model}", "ready": ready_text(model, "Version")},
            {"file": "09-model-version.png", "what": f"{model} version 1: tags (task, model, test accuracy + CI)",
             "path": f"/#/models/{model}/versions/1", "ready": ready_text("test_accuracy")},
        ]
    return shots


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    ap.add_argument("--experiment", default="dtune-arith")
    ap.add_argument("--model", help="a registered model to shoot too (export --register NAME)")
    ap.add_argument("--out", default="screenshots")
    ap.add_argument("--width", type=int, default=1600)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a page may take to render")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shots = plan(args.tracking_uri, args.experiment, args.model)
    server, base = start_server(args.tracking_uri, out / "mlflow-server.log")
    try:
        for line in asyncio.run(take(base, shots, out, args.width, args.height, args.timeout)):
            print(line)
    finally:
        if server is not None:  # the server and its job consumers share its process group
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
