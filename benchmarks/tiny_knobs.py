"""The knob table of the bundled tiny model: accuracy and cost of each decoding mode on held-out ``arith``.

    python -m benchmarks.tiny_knobs            # 500 test problems, 10 configurations (vanilla alone: ~35 min on a busy 2-core CPU)
    python -m benchmarks.tiny_knobs --quick    # 100 problems, fewer configurations

Why: the tuner only has something to find if the knobs trade accuracy for speed on this model as they do on
LLaDA -- lower thresholds must cost accuracy, and streaming (suffix window + dynamic threshold + EOS early exit)
must cut forwards and attended tokens against Fast-dLLM. This prints that evidence as a markdown table:
exact match with its Wilson 95% interval, forwards per problem (each row counted as if decoded alone),
attended query-key pairs per problem, and generated tokens per second (wall time of batched decoding).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from decoder import Counters, DecodeConfig, generate, load_model
from tuner.tasks import get_task
from tuner.verdict.stats import wilson_interval

GEN, BLOCK = 128, 32


@dataclass
class Row:
    name: str
    config: DecodeConfig
    correct: int = 0
    n: int = 0
    row_nfe: int = 0
    counters: Counters | None = None
    per_item: list[bool] | None = None


def configurations(quick: bool) -> list[tuple[str, DecodeConfig]]:
    """Vanilla, Fast-dLLM at three thresholds, and Streaming-dLLM at a few windows / alphas."""
    base = {"gen_length": GEN, "block_size": BLOCK}
    rows = [
        ("vanilla", DecodeConfig(mode="vanilla", **base)),
        ("fast tau=0.9", DecodeConfig(mode="fast", threshold=0.9, **base)),
        ("fast tau=0.7", DecodeConfig(mode="fast", threshold=0.7, **base)),
        ("fast tau=0.5", DecodeConfig(mode="fast", threshold=0.5, **base)),
        ("streaming tau=0.9 w=64 a=0.3", DecodeConfig(mode="streaming", threshold=0.9, window=64, alpha=0.3, **base)),
        ("streaming tau=0.9 w=32 a=0.3", DecodeConfig(mode="streaming", threshold=0.9, window=32, alpha=0.3, **base)),
    ]
    if not quick:
        rows += [
            ("streaming tau=0.9 w=32 a=0", DecodeConfig(mode="streaming", threshold=0.9, window=32, alpha=0.0, **base)),
            ("streaming tau=0.9 w=32 a=0.6", DecodeConfig(mode="streaming", threshold=0.9, window=32, alpha=0.6,
                                                          **base)),
            ("streaming tau=0.9 w=full a=0.3", DecodeConfig(mode="streaming", threshold=0.9, window=None, alpha=0.3,
                                                            **base)),
            ("streaming tau=0.7 w=32 a=0.3", DecodeConfig(mode="streaming", threshold=0.7, window=32, alpha=0.3, **base)),
        ]
    return rows


def run(name: str, config: DecodeConfig, model, tok, task, items, batch_size: int) -> Row:
    row = Row(name, config, counters=Counters(), per_item=[])
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        out = generate(model, [task.prompt(it) for it in chunk], config, tokenizer=tok)
        row.counters += out.counters
        row.row_nfe += sum(out.row_nfe)
        verdicts = [task.score(it, text).correct for it, text in zip(chunk, out.texts, strict=True)]
        row.per_item.extend(verdicts)
        row.correct += sum(verdicts)
        row.n += len(chunk)
    return row


def table(rows: list[Row]) -> str:
    lines = [
        "| decoding | exact match (95% CI) | NFE / problem | attended pairs / problem | tokens / problem | tokens/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = r.counters
        lo, hi = wilson_interval(r.correct, r.n)
        lines.append(
            f"| {r.name} | {r.correct / r.n:.1%} ({lo:.1%}-{hi:.1%}) | {r.row_nfe / r.n:.1f} | "
            f"{c.attended_pairs / r.n:,.0f} | {c.generated_tokens / r.n:.1f} | {c.tokens_per_s:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dtune/tiny-arith")
    p.add_argument("--split", default="test", choices=("validation", "test"))
    p.add_argument("--n", type=int, default=None, help="problems (default 500, --quick 100)")
    p.add_argument("--quick", action="store_true", help="100 problems and six configurations")
    p.add_argument("--only", default=None, help="comma-separated config names to run (substring match)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = comparable, shared machines)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ns = p.parse_args(argv)
    torch.set_num_threads(ns.threads)
    n = ns.n or (100 if ns.quick else 500)
    model, tok = load_model(ns.model, device="cpu")
    task = get_task("arith")
    items = task.load(ns.split)[:n]
    configs = configurations(ns.quick)
    if ns.only:
        wanted = [w.strip() for w in ns.only.split(",")]
        configs = [(name, c) for name, c in configs if any(w in name for w in wanted)]
    rows = []
    t0 = time.perf_counter()
    for name, config in configs:
        rows.append(run(name, config, model, tok, task, items, ns.batch_size))
        print(f"[{time.perf_counter() - t0:6.0f}s] {name}: {rows[-1].correct}/{rows[-1].n}", file=sys.stderr)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {ns.model} ({n_params / 1e6:.2f} M params), {n} arith {ns.split} problems, gen_length {GEN}, "
          f"block_size {BLOCK}, batch {ns.batch_size}, {ns.threads} CPU thread(s)\n")
    print(table(rows))
    if ns.json:
        ns.json.write_text(json.dumps([
            {"name": r.name, "config": r.config.to_dict(), "correct": r.correct, "n": r.n,
             "nfe_per_problem": r.row_nfe / r.n, "counters": r.counters.to_dict(), "per_item": r.per_item}
            for r in rows
        ], indent=2) + "\n")


if __name__ == "__main__":
    main()
