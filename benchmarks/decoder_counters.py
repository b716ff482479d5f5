"""Cost counters of each decoding mode for one prompt: NFE, tokens fed, keys attended, attention pairs.

Counters are exact and hardware-independent, so this table shows what each mode saves before any timing noise:

    python -m benchmarks.decoder_counters                      # bundled tiny model, gen 256 and 1024, block 32
    python -m benchmarks.decoder_counters --quick              # gen 256 only
    python -m benchmarks.decoder_counters --model DIR --prompt "..."

Vanilla runs steps = gen_length (one token per step). Streaming runs with tau0 = 0.9, alpha = 0.3 and early exit,
Fast-dLLM with threshold 0.9; "streaming w=full" is streaming without pruning (dynamic threshold + early exit only);
"no exit" rows show pruning's share alone.
"""

from __future__ import annotations

import argparse
import time

import torch

from decoder import DecodeConfig, generate, load_model

PROMPT = "Question: Mia has 23 shells. She finds 18 more shells. She gives away 9 shells. How many shells does Mia have now?\nAnswer:"


def configs(gen: int, block: int) -> list[tuple[str, DecodeConfig]]:
    out = [("vanilla", DecodeConfig(mode="vanilla", gen_length=gen, block_size=block, steps=gen)),
           ("fast (Fast-dLLM, 0.9)", DecodeConfig(mode="fast", gen_length=gen, block_size=block, threshold=0.9))]
    for w in (32, 64, None):
        out.append((f"streaming w={w or 'full'}", DecodeConfig(mode="streaming", gen_length=gen, block_size=block,
                                                               window=w, threshold=0.9, alpha=0.3)))
    # Pruning's share alone: the same window without early exit.
    out.append(("streaming w=32, no exit", DecodeConfig(mode="streaming", gen_length=gen, block_size=block, window=32,
                                                        threshold=0.9, alpha=0.3, early_exit=False)))
    return out


def run(model, tokenizer, prompt: str, gen: int, block: int) -> list[dict]:
    ids = tokenizer(prompt)["input_ids"]
    rows = []
    for name, cfg in configs(gen, block):
        t0 = time.perf_counter()
        r = generate(model, [ids], cfg)
        c = r.counters
        rows.append({"gen": gen, "mode": name, "nfe": c.nfe, "query_tokens": c.query_tokens, "key_tokens": c.key_tokens,
                     "attended_pairs": c.attended_pairs, "generated": c.generated_tokens,
                     "wall_s": time.perf_counter() - t0})
    fast = next(r for r in rows if r["mode"].startswith("fast"))
    for r in rows:
        r["pairs_vs_fast"] = r["attended_pairs"] / fast["attended_pairs"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="dtune/tiny-arith")
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--gen", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="gen 256 only")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tokenizer = load_model(args.model, device="cpu")
    gens = [256] if args.quick else args.gen
    print(f"model {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params), block {args.block}, "
          f"prompt {len(tokenizer(args.prompt)['input_ids'])} tokens, CPU x{torch.get_num_threads()} threads\n")
    print("| gen | mode | NFE | query tokens | key tokens | attended pairs | pairs / fast | answer tokens | wall s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for gen in gens:
        for r in run(model, tokenizer, args.prompt, gen, args.block):
            print(f"| {r['gen']} | {r['mode']} | {r['nfe']} | {r['query_tokens']:,} | {r['key_tokens']:,} | "
                  f"{r['attended_pairs']:,} | {r['pairs_vs_fast']:.3f} | {r['generated']} | {r['wall_s']:.2f} |")


if __name__ == "__main__":
    main()
