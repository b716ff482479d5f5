"""Decoder speed, side by side: vanilla, Fast-dLLM, Streaming-dLLM (paper settings) and Streaming-dLLM (tuned
profile), same model, same machine, one run, for several generation lengths.

    OMP_NUM_THREADS=1 python -m benchmarks.decoder_speed --quick          # CPU, ~5 min
    OMP_NUM_THREADS=1 python -m benchmarks.decoder_speed                  # 128 problems per length (CPU: ~1 h)
    OMP_NUM_THREADS=1 python -m benchmarks.decoder_speed --profile profiles/arith-....json --out speed.md

Why: the claim to check is "streaming >= fast >= vanilla in tokens/s at equal accuracy, and streaming's lead grows
with the generation length" (pruning and early exit save more of a longer, mostly-EOS answer region). Every
mode decodes the same `arith` test problems through `tuner.study.evaluate.Evaluator`, so tokens/s is the tuner's own
definition (answer tokens up to the first stop id, decoder wall time, one untimed warm-up per configuration) and
accuracy is exact match. Latency per sample = batched wall time / problems (the batch is `--batch-size`).

Settings:
* vanilla: LLaDA low-confidence remasking with steps = gen_length up to `--vanilla-full-steps-upto` (256) and
  gen_length/4 beyond (4 tokens per step; one token per step at 1024 costs ~1000 full forwards per problem, too
  slow for a CPU table); `--quick` uses gen_length/4 everywhere. The table prints the steps used.
* fast: Fast-dLLM, prefix cache refreshed per block, whole suffix, threshold 0.9.
* streaming paper: tau0 0.9, alpha 0.3, EOS early exit, window = min(96, gen_length/8) (32 / 64 / 96 at
  256 / 512 / 1024): the paper prunes the suffix to a window a few blocks long and widens it for long answers.
* streaming tuned: the knobs (threshold, alpha, window, early exit) of a `python -m tuner export` profile with
  this table's gen_length and block size. Without `--profile` the newest `profiles/arith-*.json` is used, if any.
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from dataclasses import dataclass, replace

import torch

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import DecodeConfig, load_model, read_profile
from tuner.study.evaluate import EvalResult, Evaluator
from tuner.tasks import get_task


@dataclass
class Row:
    gen: int
    name: str
    config: DecodeConfig
    result: EvalResult | None = None
    seconds: float = 0.0  # whole evaluation incl. warm-up and scoring, for the "how long did this take" column


def paper_window(gen: int) -> int:
    return min(96, gen // 8)


def vanilla_steps(gen: int, full_upto: int) -> int:
    return gen if gen <= full_upto else gen // 4


def tuned_profile(path: str | None) -> tuple[DecodeConfig | None, str]:
    """The tuned profile's config and where it came from (newest profiles/arith-*.json when not given)."""
    if path is None:
        found = sorted(glob.glob("profiles/arith-*.json"), key=os.path.getmtime)
        if not found:
            return None, "no tuned profile (none given, none in profiles/)"
        path = found[-1]
    return read_profile(path).decode, path


def configurations(gen: int, block: int, tuned: DecodeConfig | None, full_upto: int) -> list[tuple[str, DecodeConfig]]:
    base = {"gen_length": gen, "block_size": block}
    rows = [
        (f"vanilla (steps {vanilla_steps(gen, full_upto)})",
         DecodeConfig(mode="vanilla", steps=vanilla_steps(gen, full_upto), **base)),
        ("fast (Fast-dLLM, tau 0.9)", DecodeConfig(mode="fast", threshold=0.9, **base)),
        (f"streaming paper (w {paper_window(gen)}, tau0 0.9, a 0.3)",
         DecodeConfig(mode="streaming", window=paper_window(gen), threshold=0.9, alpha=0.3, early_exit=True, **base)),
    ]
    if tuned is not None:
        # The tuned knobs at this table's length; a vanilla pick gets the vanilla row's steps.
        cfg = replace(tuned, gen_length=gen, block_size=block, temperature=0.0)
        if cfg.mode == "vanilla":
            cfg = replace(cfg, steps=vanilla_steps(gen, full_upto))
            rows.append((f"tuned profile (vanilla, steps {cfg.steps}, exit {cfg.early_exit})", cfg))
        else:
            w = "full" if cfg.window is None else cfg.window
            rows.append((f"{cfg.mode} tuned (w {w}, tau0 {cfg.threshold:g}, a {cfg.alpha:g}, exit {cfg.early_exit})",
                         cfg))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dtune/tiny-arith")
    ap.add_argument("--gen", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--n", type=int, nargs="+", default=[128],
                    help="test problems per gen length (one value, or one per --gen)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--vanilla-full-steps-upto", type=int, default=256)
    ap.add_argument("--profile", default=None, help="tuned profile (python -m tuner export); default: newest in profiles/")
    ap.add_argument("--quick", action="store_true",
                    help="16 / 8 / 4 problems at 256 / 512 / 1024, vanilla steps gen_length/4 at every length")
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args()
    n_per = [16, 8, 4] if args.quick else args.n
    if args.quick:
        args.vanilla_full_steps_upto = 0
    if len(n_per) == 1:
        n_per = n_per * len(args.gen)
    if len(n_per) != len(args.gen):
        ap.error("--n takes one value or one per --gen")

    report = Report(args.out)
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, device="cpu")
    task = get_task("arith")
    tests = task.load("test")
    evaluator = Evaluator(model, tokenizer, task, batch_size=args.batch_size)
    tuned, tuned_src = tuned_profile(args.profile)

    report(f"### Decoder speed — {args.model}, arith test split, block {args.block}\n")
    report(machine_line())
    report(f"command: `{command_line()}`")
    report(f"tuned profile: {tuned_src}")
    if (warn := threads_warning()) is not None:
        report(warn)
    report("")

    rows: list[Row] = []
    for gen, n in zip(args.gen, n_per, strict=True):
        for name, cfg in configurations(gen, args.block, tuned, args.vanilla_full_steps_upto):
            t0 = time.perf_counter()
            row = Row(gen, name, cfg, evaluator.evaluate(tests[:n], cfg))
            row.seconds = time.perf_counter() - t0
            rows.append(row)
            print(f"  [{row.seconds:6.1f}s] gen {gen} {name}: acc {row.result.accuracy:.3f} "
                  f"tok/s {row.result.tokens_per_s:.1f}", flush=True)

    table = []
    for gen, n in zip(args.gen, n_per, strict=True):
        group = [r for r in rows if r.gen == gen]
        van = group[0].result.tokens_per_s
        fast = group[1].result.tokens_per_s
        for r in group:
            m = r.result.metrics()
            lo, hi = r.result.ci
            table.append([gen, n, r.name, f"{m['accuracy']:.1%} [{lo:.0%}, {hi:.0%}]", f"{m['nfe']:.1f}",
                          f"{m['query_tokens']:,.0f}", f"{m['attended_pairs'] / 1e6:,.2f}", f"{m['tokens_per_s']:.1f}",
                          f"{m['latency_s'] * 1000:.0f}", f"{m['tokens_per_s'] / van:.2f}x",
                          f"{m['tokens_per_s'] / fast:.2f}x", f"{r.seconds:.0f}"])
    report(md_table(["gen", "problems", "mode", "accuracy [95% CI]", "NFE / sample", "fed tokens / sample",
                     "attended pairs / sample (M)", "tokens/s", "latency ms / sample", "tok/s vs vanilla",
                     "tok/s vs fast", "run s"], table, align="rrlrrrrrrrrr"))
    report("")
    report(f"batch size {args.batch_size}; latency = batched decode wall time / problems; tokens/s = answer tokens "
           "before the first stop id / decode wall time (tuner definition); NFE counts each row's forwards.")
    report.save()


if __name__ == "__main__":
    main()
