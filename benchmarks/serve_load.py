"""Load test of `python -m decoder serve` on loopback: throughput and latency with dynamic batching against one
request at a time, and a check that no request is lost or mixed up.

    OMP_NUM_THREADS=1 python -m benchmarks.serve_load                      # 200 requests, 32 clients (~3 min)
    OMP_NUM_THREADS=1 python -m benchmarks.serve_load --requests 64 --clients 8 --out serve.md

What it does: starts the real server (a child process, loopback, --port 0) on the bundled tiny model with a profile
(default: Streaming-dLLM tau0 0.9, window 32, alpha 0.3, early exit, gen_length 128, block 32: the tiny model's
README row at Fast-dLLM's accuracy), and sends the first `--requests` problems of the arith test split, each a
distinct prompt, in four phases:

1. one at a time: one client, each request sent when the last one was answered, against a server started with
   --max-batch-size 1 --max-wait-ms 0 (the baseline: no batching, no wait);
2. `--clients` concurrent clients against that server (concurrency without batching: requests queue);
3. the same clients against the batching server (--max-batch-size, --max-wait-ms);
4. the same, streaming (`stream: true`): also the time to the first chunk (the first committed block).

Every answer of phases 2-4 must equal the answer phase 1 got for the same prompt (which the tests show equals
`generate` alone), and every request must succeed: the script exits 1 otherwise. Each phase is bounded (a fixed
number of requests, a 120 s timeout per request), the servers are stopped with SIGTERM at the end (a drain that
must exit 0), and nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import DecodeConfig, save_profile
from tuner.tasks import get_task

MODEL = "dtune/tiny-arith"
DEFAULT_PROFILE = DecodeConfig(mode="streaming", gen_length=128, block_size=32, window=32, threshold=0.9,
                               alpha=0.3)


@dataclass
class Answer:
    status: int = 0
    text: str = ""
    tokens: int = 0
    latency_s: float = 0.0
    first_chunk_s: float | None = None
    error: str = ""


@dataclass
class Phase:
    name: str
    clients: int
    stream: bool = False
    answers: list[Answer] = field(default_factory=list)
    wall_s: float = 0.0
    batch_mean: float = 0.0
    forwards_mean: float = 0.0


class Server:
    """`python -m decoder serve` as a child process on a free loopback port."""

    def __init__(self, profile: Path, log: Path, max_batch: int, max_wait_ms: int):
        self.log = log
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "decoder", "serve", "--model", MODEL, "--profile", str(profile),
                 "--host", "127.0.0.1", "--port", "0", "--max-batch-size", str(max_batch),
                 "--max-wait-ms", str(max_wait_ms), "--no-access-log"],
                stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 180
        while not (found := re.search(r"on http://(127\.0\.0\.1):(\d+)", log.read_text())):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
            time.sleep(0.1)
        self.host, self.port = found.group(1), int(found.group(2))
        while True:
            try:
                self.metrics()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def metrics(self) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://{self.host}:{self.port}/metrics", timeout=10).read().decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}

    def stop(self) -> int:
        """SIGTERM: drain and exit; returns the exit code (0 expected)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


def ask(conn: http.client.HTTPConnection, prompt: str, stream: bool) -> Answer:
    body = {"model": MODEL, "prompt": prompt, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    answer, t0 = Answer(), time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answer.status = response.status
        if not stream:
            data = json.loads(response.read())
            if response.status == 200:
                answer.text, answer.tokens = data["choices"][0]["text"], data["usage"]["completion_tokens"]
            else:
                answer.error = data["error"]["message"]
        else:
            parts = []
            while line := response.readline():
                if not line.startswith(b"data: {"):
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    answer.tokens = event["usage"]["completion_tokens"]
                elif event.get("choices") and event["choices"][0]["text"]:
                    if answer.first_chunk_s is None:
                        answer.first_chunk_s = time.perf_counter() - t0
                    parts.append(event["choices"][0]["text"])
                elif "error" in event:
                    answer.error = event["error"]["message"]
            answer.text = "".join(parts)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
        answer.error = f"{type(exc).__name__}: {exc}"
    answer.latency_s = time.perf_counter() - t0
    return answer


def run_phase(server: Server, phase: Phase, prompts: list[str]) -> Phase:
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(prompts)):
        todo.put(i)
    answers: list[Answer | None] = [None] * len(prompts)

    def client() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                break
            answers[i] = ask(conn, prompts[i], phase.stream)
            if answers[i].error:
                conn.close()  # a fresh connection for the next request
        conn.close()

    before = server.metrics()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(phase.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.wall_s = time.perf_counter() - t0
    after = server.metrics()
    phase.answers = [a or Answer(error="never sent") for a in answers]

    def mean(name: str) -> float:
        count = after[f"{name}_count"] - before[f"{name}_count"]
        return (after[f"{name}_sum"] - before[f"{name}_sum"]) / count if count else 0.0

    phase.batch_mean, phase.forwards_mean = mean("dtune_batch_size"), mean("dtune_forwards_per_request")
    return phase


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=int, default=10)
    parser.add_argument("--profile", help="a profile for dtune/tiny-arith (default: see the module docstring)")
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args(argv)
    report = Report(args.out)
    if warning := threads_warning():
        print(warning, file=sys.stderr)
    task = get_task("arith")
    prompts = [task.prompt(item) for item in task.load("test")[: args.requests]]
    if len(set(prompts)) != len(prompts):
        raise SystemExit("the prompts must be distinct to tell a mixed-up answer")

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        profile = Path(args.profile) if args.profile else save_profile(Path(tmp) / "profile.json", DEFAULT_PROFILE)
        load_before = os.getloadavg()
        batched = Server(profile, Path(tmp) / "batched.log", args.max_batch_size, args.max_wait_ms)
        unbatched = Server(profile, Path(tmp) / "unbatched.log", 1, 0)
        try:
            alone = run_phase(unbatched, Phase("one at a time", 1), prompts)
            phases = [alone,
                      run_phase(unbatched, Phase(f"{args.clients} clients, max batch 1", args.clients), prompts),
                      run_phase(batched, Phase(f"{args.clients} clients, dynamic batching", args.clients), prompts),
                      run_phase(batched, Phase(f"{args.clients} clients, dynamic batching, streaming",
                                               args.clients, stream=True), prompts)]
        finally:
            codes = [batched.stop(), unbatched.stop()]
        load_after = os.getloadavg()

    rows, failures = [], []
    for phase in phases:
        ok = [a for a in phase.answers if a.status == 200 and not a.error]
        mixed = sum(1 for a, ref in zip(phase.answers, alone.answers, strict=True) if a.text != ref.text)
        failures += [f"{phase.name}: {len(phase.answers) - len(ok)} failed, {mixed} differ from one at a time"] \
            if len(ok) < len(phase.answers) or mixed else []
        latencies = [a.latency_s for a in ok]
        tokens = sum(a.tokens for a in ok)
        first = [a.first_chunk_s for a in ok if a.first_chunk_s is not None]
        rows.append([phase.name, f"{len(ok)}/{len(phase.answers)}", mixed, f"{phase.wall_s:.1f}",
                     f"{tokens / phase.wall_s:.0f}", f"{len(ok) / phase.wall_s:.1f}",
                     f"{1000 * pct(latencies, 50):.0f}", f"{1000 * pct(latencies, 99):.0f}",
                     f"{1000 * pct(first, 50):.0f}" if first else "–", f"{phase.batch_mean:.1f}",
                     f"{phase.forwards_mean:.1f}"])
    speedup = (float(rows[2][4]) / float(rows[0][4])) if float(rows[0][4]) else 0.0

    report(f"### Serving load — {MODEL}, arith test prompts, {args.requests} requests")
    report()
    report(f"command: `{command_line()}`  ")
    report(f"{machine_line()}  ")
    report(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
           f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}  ")
    report(f"profile: {profile if args.profile else DEFAULT_PROFILE}; server: --max-batch-size "
           f"{args.max_batch_size} --max-wait-ms {args.max_wait_ms}; clients: keep-alive HTTP/1.1 connections "
           "in one process")
    report()
    report(md_table(["phase", "ok", "differ", "wall s", "tokens/s", "req/s", "p50 ms", "p99 ms", "p50 first chunk ms",
                     "mean batch", "forwards/req"], rows))
    report()
    report(f"Dynamic batching: {speedup:.1f}x the tokens/s of one request at a time. Servers' exit codes after "
           f"SIGTERM: {codes}.")
    report.save()
    if failures or any(codes):
        print("FAILED: " + "; ".join(failures) + (f"; exit codes {codes}" if any(codes) else ""), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
