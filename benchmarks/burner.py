"""A bounded, reproducible background load: N processes that each spin for `duty` of every `period` seconds and
sleep the rest, and stop by themselves after `seconds` (or as soon as the process that started them is gone).

    python -m benchmarks.burner --procs 2 --duty 0.6 --period 0.05 --seconds 300

Why this shape: a fixed duty cycle is the same load every time it runs (unlike "whatever else is on the machine"),
a period much shorter than a decode pass loads every pass alike, and the deadline means a crashed benchmark can't
leave the machine burning. `start()` is what benchmarks.noisy_speed calls.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time


def burn(duty: float, period: float, deadline: float, parent: int) -> None:
    """Spin `duty * period`, sleep the rest, until `deadline` (time.monotonic) or the parent is gone."""
    x = 0
    while time.monotonic() < deadline and os.getppid() == parent:
        start = time.monotonic()
        while time.monotonic() - start < duty * period:
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF  # integer work: no memory traffic, no library calls
        rest = period - (time.monotonic() - start)
        if rest > 0:
            time.sleep(rest)


def start(procs: int, duty: float, period: float, seconds: float) -> list[mp.Process]:
    """Start the burner processes (daemons: they die with this process too); stop them with `stop`."""
    if not 0 < duty <= 1 or period <= 0 or seconds <= 0 or procs < 1:
        raise ValueError("need procs >= 1, 0 < duty <= 1, period > 0 and seconds > 0")
    deadline = time.monotonic() + seconds
    ctx = mp.get_context("spawn")
    out = [ctx.Process(target=burn, args=(duty, period, deadline, os.getpid()), daemon=True) for _ in range(procs)]
    for p in out:
        p.start()
    return out


def stop(burners: list[mp.Process]) -> None:
    for p in burners:
        if p.is_alive():
            p.terminate()
    for p in burners:
        p.join(timeout=5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--duty", type=float, default=0.6)
    ap.add_argument("--period", type=float, default=0.05)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    burners = start(args.procs, args.duty, args.period, args.seconds)
    try:
        for p in burners:
            p.join()
    finally:
        stop(burners)


if __name__ == "__main__":
    main()
