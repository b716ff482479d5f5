"""Per-step time of each decoding mode on a random-weight model of LLaDA-8B's shapes (bf16, GPU), and the achieved
fraction of the weight-read floor.

    python -m benchmarks.gpu_step_time --quick                   # gen 256, batch 1 (a GPU: ~1 min)
    python -m benchmarks.gpu_step_time                           # gen 256, 512, 1024
    python -m benchmarks.gpu_step_time --hbm-gbps 4800           # the floor from a given bandwidth, not a measured one
    OMP_NUM_THREADS=1 python -m benchmarks.gpu_step_time --device cpu --config-json decoder/bundled/tiny-arith/config.json --quick
                                                                  # the code path on CPU

Why: real LLaDA weights can't be downloaded here, but step time depends on shapes, not on weight values. At
batch 1 a forward of an 8B model must at least read its 16 GB of bf16 weights once, so `bytes / HBM bandwidth`
is a floor on any step; the fraction of it that a mode achieves shows how much is left to gain (vanilla and the
refresh forwards also pay attention over the whole sequence, cached steps much less). The bandwidth is measured on
the device itself (a large device-to-device copy, the best a streaming read can do there); the data-sheet peak is
printed beside it, and `--hbm-gbps` replaces the measured figure. Random weights give flat confidences, so
threshold modes commit about one token per step and never exit early: this measures the cost of a step, not the
number of steps (that comes from the CPU table's NFE column on a trained model).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import Report, command_line, machine_line, md_table
from decoder import DecodeConfig, build_random_model, generate

# Peak HBM bandwidth in GB/s by device-name fragment (vendor data sheets).
HBM_GBPS = {"H200": 4800.0, "H100 80GB HBM3": 3350.0, "H100 PCIe": 2000.0, "H100": 3350.0, "A100-SXM4-80GB": 2039.0,
            "A100": 1555.0, "L40S": 864.0, "A10G": 600.0}


def datasheet_bandwidth(device: torch.device) -> float | None:
    """The vendor's peak HBM bandwidth of this GPU, if it is in the table."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbps for frag, gbps in HBM_GBPS.items() if frag in name), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_bandwidth(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """GB/s of copying `nbytes` between two device buffers (each byte read once and written once).

    A copy is the simplest kernel that streams memory at full speed, so its rate is what a weight read can hope
    for on this device; it usually falls short of the data-sheet peak, which is why the floor uses it.
    """
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)  # warm-up: allocation, first touch
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    _sync(device)
    return 2 * nbytes * repeats / (time.perf_counter() - t0) / 1e9


def configs(gen: int, block: int, window: int) -> list[tuple[str, DecodeConfig]]:
    base = {"gen_length": gen, "block_size": block}
    return [("vanilla (steps = gen)", DecodeConfig(mode="vanilla", steps=gen, **base)),
            ("fast (Fast-dLLM)", DecodeConfig(mode="fast", threshold=0.9, **base)),
            (f"streaming (w {window})", DecodeConfig(mode="streaming", window=window, threshold=0.9, alpha=0.3, **base))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="llada-8b")
    ap.add_argument("--config-json", default=None, help="model shapes from a config.json instead of --preset")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--gen", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--hbm-gbps", type=float, default=None, help="bandwidth for the floor instead of measuring it")
    ap.add_argument("--copy-mb", type=int, default=None,
                    help="buffer size of the bandwidth measurement (default: 2048 MB on a GPU, 256 MB on CPU)")
    ap.add_argument("--quick", action="store_true", help="gen 256 only")
    ap.add_argument("--compile", action="store_true",
                    help="the decoder's fused path (build_random_model(compile=True); torch.compile on CUDA)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    shapes = json.load(open(args.config_json)) if args.config_json else args.preset
    switch = {"compile": True} if args.compile else {}  # the flag alone, so the script also runs older decoders
    model = build_random_model(shapes, device=dev, dtype=getattr(torch, args.dtype), **switch)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    sheet = datasheet_bandwidth(dev)
    copy_mb = args.copy_mb or (2048 if dev.type == "cuda" else 256)
    measured = measured_bandwidth(dev, copy_mb << 20)
    gbps = args.hbm_gbps or measured
    floor_ms = weight_bytes / (gbps * 1e9) * 1e3

    report = Report(args.out)
    path = "fused (--compile)" if args.compile else "eager"
    report(f"### Per-step time — random-weight {args.config_json or args.preset}, {args.dtype}, batch {args.batch}, "
           f"prompt {args.prompt_len} tokens, {path} path\n")
    report(machine_line(str(dev)))
    report(f"command: `{command_line()}`")
    size = f"{weight_bytes / 1e9:.2f} GB" if weight_bytes >= 1e9 else f"{weight_bytes / 1e6:.2f} MB"
    report(f"weights {size}; memory bandwidth {measured:.0f} GB/s measured ({copy_mb} MB "
           f"device copy), data sheet {f'{sheet:.0f} GB/s' if sheet else 'n/a'}; floor per forward = weights / "
           f"{gbps:.0f} GB/s{' (--hbm-gbps)' if args.hbm_gbps else ''} = {floor_ms:.3f} ms\n")
    gen_ = torch.Generator().manual_seed(0)
    prompts = torch.randint(2, model.args.vocab_size, (args.batch, args.prompt_len), generator=gen_).tolist()
    rows = []
    for gen in [256] if args.quick else args.gen:
        for name, cfg in configs(gen, args.block, args.window):
            generate(model, prompts, DecodeConfig(**{**cfg.to_dict(), "gen_length": args.block,
                                                     **({"steps": 1} if cfg.mode == "vanilla" else {})}))  # warm-up
            c = generate(model, prompts, cfg).counters
            step_ms = c.wall_time_s / c.nfe * 1e3
            rows.append([gen, name, c.nfe, f"{c.query_tokens / c.row_forwards:.0f}", f"{step_ms:.2f}",
                         f"{floor_ms / step_ms:.0%}", f"{c.wall_time_s:.2f}"])
    report(md_table(["gen", "mode", "forwards", "fed tokens / forward", "ms / step", "fraction of weight-read floor",
                     "wall s"], rows))
    report.save()


if __name__ == "__main__":
    main()
