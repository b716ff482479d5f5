"""aten ops per forward of a 32-layer LLaDA-structured model, eager vs the fused path (`--compile`).

    OMP_NUM_THREADS=1 python -m benchmarks.op_count                 # streaming w96 + vanilla, fp32 and bf16 (~2 min)
    OMP_NUM_THREADS=1 python -m benchmarks.op_count --batch 16      # a left-padded batch (the additive mask)

Why: on a GPU a batch-1 cached step of LLaDA-8B is bound by kernel launches (docs/gpu-review.md, #2): each aten op
that launches a kernel costs the host 6-10 us, against ~5 ms of weight reads per forward. The count is taken the
review's way (`../shared/tools/opcount.py`): a `TorchDispatchMode` counts every aten op dispatched inside the
model's forward, view ops (which launch nothing) left out. The model has LLaDA-8B's structure, layer count and
vocabulary but a width of 256, so it runs on a CPU in seconds; the op count does not depend on the width.
A forward is a *cached step* when it reads a prefix cache and keeps none; its KV `cat` count is the review's #3
(the whole cache copied per step).
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import decoder
from benchmarks.common import Report, command_line, machine_line, md_table, threads_warning
from decoder import DecodeConfig, ModelArgs, build_random_model, generate

VIEW_OPS = {"view", "_unsafe_view", "transpose", "unsqueeze", "squeeze", "slice", "expand", "as_strided", "select",
            "t", "alias", "detach", "permute", "split", "unbind", "lift_fresh", "_reshape_alias", "reshape", "numel",
            "sym_size", "sym_numel", "sym_stride", "is_same_size", "size", "stride", "dim", "chunk",
            "split_with_sizes"}

LLADA_32 = ModelArgs(arch="llada", vocab_size=126464, dim=256, n_layers=32, n_heads=32, n_kv_heads=32, ffn_dim=768,
                     rope_theta=500000.0, max_seq_len=4096, mask_id=126336, eos_id=126081,
                     stop_ids=(126081, 126348), pad_id=126081)


class OpCounter(TorchDispatchMode):
    """Counts aten ops by name, per forward kind ('cached', 'refresh', 'vanilla') and outside the forward ('loop')."""

    def __init__(self) -> None:
        super().__init__()
        self.kind: str | None = None
        self.ops: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.forwards: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name == "cat" and _cat_dim(args, kwargs) == 2:  # (B, H, S, D) along the sequence: a KV cache cat
            name = "cat (KV)"
        self.ops[self.kind or "loop"][name] += 1
        return func(*args, **(kwargs or {}))


def _cat_dim(args: tuple, kwargs: dict | None) -> int:
    tensors = args[0]
    dim = args[1] if len(args) > 1 else (kwargs or {}).get("dim", 0)
    return dim % tensors[0].dim() if tensors and tensors[0].dim() == 4 else -1


def forward_kind(kwargs: dict[str, Any]) -> str:
    if kwargs.get("keep_prefix"):
        return "refresh"
    return "cached" if kwargs.get("cache") is not None else "vanilla"


def count(model: torch.nn.Module, prompts: list[list[int]], config: DecodeConfig) -> OpCounter:
    """Run `generate` once to warm up, then once under the counter, with the forward kind set by hooks."""
    counter = OpCounter()

    def pre(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        counter.kind = forward_kind(kwargs)
        counter.forwards[counter.kind] += 1

    def post(*_: Any) -> None:
        counter.kind = None

    generate(model, prompts, config)
    hooks = [model.register_forward_pre_hook(pre, with_kwargs=True), model.register_forward_hook(post)]
    try:
        with counter:
            generate(model, prompts, config)
    finally:
        for h in hooks:
            h.remove()
    return counter


def per_forward(counter: OpCounter, kinds: tuple[str, ...], keep: Callable[[str], bool] = lambda n: True) -> float:
    n = sum(counter.forwards[k] for k in kinds)
    ops = sum(v for k in kinds for name, v in counter.ops[k].items() if name not in VIEW_OPS and keep(name))
    return ops / n if n else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--paths", nargs="+", default=["eager", "fused"],
                    help="'eager' alone also runs a checkout from before the fused path (PYTHONPATH=that checkout)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    report = Report(args.out)
    if (warning := threads_warning()) is not None:
        report(warning)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, 126000, (args.prompt_len - (3 * r if args.batch > 1 else 0),), generator=g).tolist()
               for r in range(args.batch)]
    configs = {
        "streaming w96": DecodeConfig(mode="streaming", gen_length=64, block_size=32, window=96, threshold=0.9,
                                      alpha=0.3),
        "vanilla": DecodeConfig(mode="vanilla", gen_length=64, block_size=32, steps=8),
    }
    rows, mixes = [], []
    for dtype in args.dtypes:
        for path in args.paths:
            switch = {"compile": True} if path == "fused" else {}
            model = build_random_model(LLADA_32, dtype=getattr(torch, dtype), **switch)
            for name, cfg in configs.items():
                c = count(model, prompts, cfg)
                kinds = ("cached", "refresh") if cfg.mode != "vanilla" else ("vanilla",)
                cached = per_forward(c, ("cached",)) if cfg.mode != "vanilla" else None
                cats = per_forward(c, ("cached",), lambda n: n == "cat (KV)") if cfg.mode != "vanilla" else None
                loop = sum(v for k, v in c.ops["loop"].items() if k not in VIEW_OPS) / sum(c.forwards.values())
                rows.append([dtype, path, name, f"{per_forward(c, kinds):,.0f}",
                             "—" if cached is None else f"{cached:,.0f}",
                             "—" if cats is None else f"{cats:g}", f"{loop:.1f}", sum(c.forwards.values())])
                if cfg.mode != "vanilla":
                    n = c.forwards["cached"]
                    mix = sorted(((k, v / n) for k, v in c.ops["cached"].items() if k not in VIEW_OPS),
                                 key=lambda kv: -kv[1])
                    mixes.append(f"- {dtype} {path}, cached step: " + ", ".join(f"{k} {v:g}" for k, v in mix))
    report(f"### aten ops per forward, 32-layer LLaDA-structured model (dim 256, vocab 126,464), batch {args.batch}")
    report()
    report(md_table(["dtype", "path", "mode", "ops / forward", "ops / cached step", "KV cat / cached step",
                     "loop ops / step", "forwards"], rows, "llllrrrr"))
    report()
    report("non-view ops of one cached step, by name:")
    for line in mixes:
        report(line)
    report()
    report(machine_line())
    report(f"decoder: {decoder.__file__}")
    report(f"command: {command_line()}")
    report.save()


if __name__ == "__main__":
    main()
