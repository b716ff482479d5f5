"""Where the time of one Streaming-dLLM generation goes: model forward vs decode-loop bookkeeping vs tokenisation.

    OMP_NUM_THREADS=1 python -m benchmarks.profile_streaming --quick       # gen 256, batch 1 and 16 (< 1 min)
    OMP_NUM_THREADS=1 python -m benchmarks.profile_streaming               # gen 256 and 1024, more repeats
    OMP_NUM_THREADS=1 python -m benchmarks.profile_streaming --ops 15      # also torch.profiler's top ops

Why: the decoder's speedups are claimed from fewer and smaller forwards; that only holds if the Python loop
around the forwards (selection, pruning layout, counters, early exit) costs little next to them. Timers are
forward hooks on the model (start/end of every forward call; device synchronised on GPU) and a wrapper around
the tokenizer (prompt encoding inside `generate()` plus decoding the answers). Bookkeeping = the rest of the
`generate()` call. The generation is the streaming paper setting (tau0 0.9, alpha 0.3, window 32, early exit)
on `arith` test prompts passed as strings, so tokenisation is part of the call as in `decoder generate`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import DecodeConfig, generate, load_model
from tuner.tasks import get_task


class ForwardTimer:
    """Sums the wall time of model forward calls through pre/post forward hooks on the top-level module."""

    def __init__(self, model: torch.nn.Module):
        self.total, self.calls, self._t0 = 0.0, 0, 0.0
        self._cuda = model.device.type == "cuda"
        model.register_forward_pre_hook(self._start)
        model.register_forward_hook(self._stop)

    def _start(self, *_: Any) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def _stop(self, *_: Any) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        self.total += time.perf_counter() - self._t0
        self.calls += 1


class TimedTokenizer:
    """Delegates to a tokenizer and sums the time of its encode (`__call__`) and `decode` calls."""

    def __init__(self, tokenizer: Any):
        self._tok, self.total = tokenizer, 0.0

    def __call__(self, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._tok(*args, **kw)
        finally:
            self.total += time.perf_counter() - t0

    def decode(self, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._tok.decode(*args, **kw)
        finally:
            self.total += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


def profile_once(model, tokenizer, prompts: list[str], cfg: DecodeConfig, fwd: ForwardTimer) -> dict[str, float]:
    tok = TimedTokenizer(tokenizer)
    fwd.total, fwd.calls = 0.0, 0
    t0 = time.perf_counter()
    result = generate(model, prompts, cfg, tokenizer=tok)
    total = time.perf_counter() - t0
    return {"total": total, "forward": fwd.total, "tokenise": tok.total, "calls": fwd.calls,
            "loop": total - fwd.total - tok.total, "nfe": result.counters.nfe}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dtune/tiny-arith")
    ap.add_argument("--gen", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ops", type=int, default=0, help="print torch.profiler's top N ops (by self CPU time)")
    ap.add_argument("--quick", action="store_true", help="gen 256 only, 3 repeats")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    gens, repeats = ([256], 3) if args.quick else (args.gen, args.repeats)

    report = Report(args.out)
    model, tokenizer = load_model(args.model, device="cpu")
    fwd = ForwardTimer(model)
    prompts_all = [get_task("arith").prompt(item) for item in get_task("arith").load("test")[: max(args.batch)]]
    report(f"### Where the time goes — one streaming generation, {args.model}\n")
    report(machine_line())
    report(f"command: `{command_line()}`")
    if (warn := threads_warning()) is not None:
        report(warn)
    report(f"\nstreaming tau0 0.9, alpha 0.3, window {args.window}, early exit, block 32; median of {repeats} runs "
           "after one warm-up; times per generate() call\n")
    rows = []
    for gen in gens:
        cfg = DecodeConfig(mode="streaming", gen_length=gen, block_size=32, window=args.window, threshold=0.9,
                           alpha=0.3, early_exit=True)
        for batch in args.batch:
            prompts = prompts_all[:batch]
            profile_once(model, tokenizer, prompts, cfg, fwd)  # warm-up
            runs = [profile_once(model, tokenizer, prompts, cfg, fwd) for _ in range(repeats)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            rows.append([gen, batch, int(med["nfe"]), f"{med['total'] * 1e3:.1f}", f"{med['forward'] * 1e3:.1f}",
                         f"{med['loop'] * 1e3:.1f}", f"{med['tokenise'] * 1e3:.2f}",
                         f"{med['forward'] / med['total']:.0%}", f"{med['loop'] / med['total']:.0%}",
                         f"{med['tokenise'] / med['total']:.1%}", f"{med['loop'] / med['forward']:.0%}",
                         f"{med['loop'] / max(med['nfe'], 1) * 1e3:.2f}"])
    report(md_table(["gen", "batch", "forwards", "total ms", "forward ms", "loop ms", "tokenise ms", "forward %",
                     "loop %", "tokenise %", "loop / forward", "loop ms / forward"], rows))

    if args.ops:
        cfg = DecodeConfig(mode="streaming", gen_length=gens[0], block_size=32, window=args.window, threshold=0.9,
                           alpha=0.3)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            generate(model, prompts_all[: args.batch[0]], cfg, tokenizer=tokenizer)
        report(f"\ntorch.profiler, gen {gens[0]}, batch {args.batch[0]}: top {args.ops} ops by self CPU time\n")
        report("```\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops) + "\n```")
    report.save()


if __name__ == "__main__":
    main()
