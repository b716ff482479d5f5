"""The fused path (`--compile`) against the eager one on the bundled tiny model: same tokens, and tokens/s.

    OMP_NUM_THREADS=1 python -m benchmarks.fused_vs_eager                  # 500 arith test problems (~5 min)
    OMP_NUM_THREADS=1 python -m benchmarks.fused_vs_eager --limit 100      # a quicker look

Why: the fused path changes the order of float operations (one QKV GEMM, rms_norm and RoPE in single kernels, the
residual adds inside the output GEMMs), so its logits differ from the eager path's by rounding; what must not
differ is a decoded token. Every mode decodes the whole test split on both paths in batches of 16 and the tokens
are compared one by one. Speed: the paper's streaming setting on both paths at batch 1 and 16, eager and fused
passes interleaved (best of `--repeats`), timed by the decoding thread's CPU time (one thread: what a pass costs,
whatever else the shared machine runs). Vanilla runs 32 steps for 128 tokens (4 per step) to keep the run short.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import DecodeConfig, generate, load_model
from tuner.tasks import get_task

MODES = {
    "vanilla": DecodeConfig(mode="vanilla", gen_length=128, block_size=32, steps=32),
    "fast": DecodeConfig(mode="streaming", gen_length=128, block_size=32, window=None, threshold=0.9, alpha=0.0,
                         early_exit=False),
    "streaming": DecodeConfig(mode="streaming", gen_length=128, block_size=32, window=32, threshold=0.9, alpha=0.3),
}


def decode(model, tok, prompts: list[str], config: DecodeConfig, batch: int) -> tuple[torch.Tensor, float, int]:
    """(tokens (N, gen), decode CPU seconds of this thread, answer tokens up to the stop) over `prompts` in batches
    of `batch`. CPU time, not wall: with one thread it is what a pass costs, whatever else the machine runs."""
    tokens, cpu, counted = [], 0.0, 0
    for i in range(0, len(prompts), batch):
        c0 = time.thread_time()
        out = generate(model, prompts[i : i + batch], config, tokenizer=tok)
        cpu += time.thread_time() - c0
        tokens.append(out.tokens)
        counted += out.counters.generated_tokens
    return torch.cat(tokens), cpu, counted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=500, help="test problems (the split has 500)")
    ap.add_argument("--speed-limit", type=int, default=96, help="problems per timed pass")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    report = Report(args.out)
    if (warning := threads_warning()) is not None:
        report(warning)
    eager, tok = load_model("dtune/tiny-arith", device="cpu")
    fused, _ = load_model("dtune/tiny-arith", device="cpu", compile=True, with_tokenizer=False)
    task = get_task("arith")
    items = task.load("test")[: args.limit]
    prompts = [task.prompt(item) for item in items]

    rows = []
    for name, cfg in MODES.items():
        t0 = time.perf_counter()
        a, wall_a, n_a = decode(eager, tok, prompts, cfg, 16)
        b, wall_b, n_b = decode(fused, tok, prompts, cfg, 16)
        same_rows = int((a == b).all(1).sum())
        rows.append([name, len(prompts), f"{same_rows}/{len(prompts)}", f"{int((a != b).sum())}",
                     f"{n_a / wall_a:,.0f}", f"{n_b / wall_b:,.0f}", f"{time.perf_counter() - t0:.0f}"])
    report(f"### tiny-arith, eager vs fused: tokens on {len(prompts)} arith test problems (batches of 16)")
    report()
    report(md_table(["mode", "problems", "rows identical", "tokens differing", "eager tok/CPU-s", "fused tok/CPU-s",
                     "wall s"],
                    rows))
    report()

    cfg, speed = MODES["streaming"], []
    timed = prompts[: args.speed_limit]
    for batch in (1, 16):
        best = {"eager": float("inf"), "fused": float("inf")}
        counted = 0
        for _ in range(args.repeats):
            for path, model in (("eager", eager), ("fused", fused)):
                _, wall, counted = decode(model, tok, timed, cfg, batch)
                best[path] = min(best[path], wall)
        speed.append([batch, len(timed), f"{counted / best['eager']:,.0f}", f"{counted / best['fused']:,.0f}",
                      f"{best['eager'] / best['fused']:.2f}x"])
    report(f"### tiny-arith, streaming (w32, tau 0.9, alpha 0.3, early exit): tokens/s, best of {args.repeats} "
           "interleaved passes")
    report()
    report(md_table(["batch", "problems", "eager tok/CPU-s", "fused tok/CPU-s", "fused / eager"], speed))
    report()
    report(machine_line())
    report(f"command: {command_line()}")
    report.save()


if __name__ == "__main__":
    main()
