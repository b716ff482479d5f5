"""GPU check of dtune's decoder on a random-weight LLaDA-8B (bf16), sized for ~5-6 minutes on one H100.

Copied from ../shared/tools/gpu_check.py (the review's tool, docs in ../shared/docs/gpu-review.md section 5) and
adapted to the decoder's static KV cache and fused path. Run from the repo root:

    python benchmarks/gpu_check.py --out "$OUT/gpu_check"             # on the GPU (writes .json)
    python benchmarks/gpu_check.py --compile --out "$OUT/gpu_check"   # fwd/e2e on the eager AND the fused path
    OMP_NUM_THREADS=1 python benchmarks/gpu_check.py --smoke --compile --out OUT   # CPU smoke test of the code path

With --compile the model is built with `compile=True` (fused blocks, torch.compile on CUDA); `fwd` and `e2e` then
time both paths side by side on the same weights (`DiffusionLM.fuse(False)` switches back to eager; torch.compile'd
blocks are compiled around the fused code, so the eager rows of a compiled model run uncompiled Python). The
`compile` section compiles one block (eager vs torch.compile per layer).

Sections (each guarded by a time budget, each result flushed to the JSON as soon as it exists):
  env       device, torch/CUDA versions
  hw        copy bandwidth (GB/s); bf16 GEMM ms, TFLOP/s and weight GB/s for the layer shapes at M=129 (batch-1
            cached step), 4128 (batch-32 cached step), 36992 (batch-32 vanilla/refresh)
  load      build_random_model("llada-8b", bf16, cuda): seconds, peak / final allocated, reserved
  fwd       one model forward per case (batch 1 and 32; cached step, refresh, vanilla; with/without a padding
            mask): wall ms (synchronised), GPU ms (CUDA events), host issue ms (call returns, no sync);
            host_issue ~ wall means launch-bound
  prof      torch.profiler of the batch-1 and batch-32 cached forwards: CUDA kernels per forward, GPU busy
            fraction, top kernels by GPU time (RMSNorm/RoPE elementwise vs GEMM vs attention vs cat)
  sdpa      which SDPA backend accepts the padded-batch mask (flash must refuse), and ms per call of
            flash / efficient / math for the batch-32 cached shape
  compact   PrefixCache.select_rows (in place, into the first rows) on a batch-32, 1124-position cache
  propose   decoder.selection.propose at batch 1 and 32 (fp64 over the vocabulary) vs an fp32 variant
  e2e       generate(): streaming (w 96) / fast / vanilla at batch 1, prompt 900, gen 256 (ms per step = wall /
            nfe); streaming w 96 at batch 32, prompts 900-807 (padded), gen 256 (~1 min; peak memory)
  compile   torch.compile of one Block (eager vs compiled ms per layer, batch 1 and 32) -- last, optional
"""

# The timed lambdas run inside the iteration that defines them (B023), and tensors are `del`eted right after their
# last use to free GPU memory between cases (F821 on the closures that used them): both on purpose.
# ruff: noqa: B023, F821, UP031
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch

sys.path.insert(0, os.getcwd())
from decoder import DecodeConfig, ModelArgs, build_random_model, generate  # noqa: E402
from decoder.model import PrefixCache  # noqa: E402
from decoder.selection import propose  # noqa: E402

RESULTS: dict = {}
T0 = time.perf_counter()


def save(out: str) -> None:
    with open(out + ".json", "w") as fh:
        json.dump(RESULTS, fh, indent=1, default=str)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, reps=5, warm=2):
    """(wall ms, gpu ms, host-issue ms) medians; gpu ms from CUDA events (wall on CPU)."""
    for _ in range(warm):
        fn()
    sync(dev)
    walls, gpus, hosts = [], [], []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync(dev)
            t0 = time.perf_counter()
            a.record()
            fn()
            b.record()
            t1 = time.perf_counter()
            sync(dev)
            t2 = time.perf_counter()
            gpus.append(a.elapsed_time(b))
            hosts.append((t1 - t0) * 1e3)
            walls.append((t2 - t0) * 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            walls.append((time.perf_counter() - t0) * 1e3)
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    return {"wall_ms": med(walls), "gpu_ms": med(gpus), "host_issue_ms": med(hosts)}


def mem(dev):
    if dev.type != "cuda":
        return {}
    return {"allocated_gb": torch.cuda.memory_allocated(dev) / 1e9, "reserved_gb": torch.cuda.memory_reserved(dev) / 1e9,
            "peak_allocated_gb": torch.cuda.max_memory_allocated(dev) / 1e9}


def section(name, out, fn):
    t = time.perf_counter()
    try:
        RESULTS[name] = fn()
    except Exception as exc:  # keep going: every section is independent
        RESULTS[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
    RESULTS.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
    save(out)
    print(f"[{time.perf_counter() - T0:6.1f}s] {name}: {json.dumps(RESULTS[name], default=str)[:1500]}", flush=True)


def synthetic_cache(args: ModelArgs, B, P, dev, dt, room=0):
    """A prefix of P positions in static buffers with `room` positions after it for a cached step's own K/V."""
    shape = (B, args.n_kv_heads, P + room, args.head_dim)
    ks = [torch.randn(shape, device=dev, dtype=dt) for _ in range(args.n_layers)]
    vs = [torch.randn(shape, device=dev, dtype=dt) for _ in range(args.n_layers)]
    return PrefixCache(ks, vs, None, length=P)


def paths(model, compile_flag):
    """(label, switch) pairs to time: the eager path alone, or eager and fused with --compile."""
    if not compile_flag:
        return [("", lambda: None)]
    return [("eager_", lambda: model.fuse(False)), ("fused_", lambda: model.fuse(True))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu_check")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU: checks the script, measures nothing")
    ap.add_argument("--no-compile", action="store_true", help="skip the one-block torch.compile section")
    ap.add_argument("--compile", action="store_true",
                    help="build the model with compile=True and time fwd/e2e on the eager and the fused path")
    ap.add_argument("--disk-load", action="store_true", help="also save the random model and time load_model (~1 min)")
    ap.add_argument("--budget-s", type=float, default=380.0, help="skip remaining heavy sections past this")
    a = ap.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    smoke = a.smoke
    dev = torch.device("cpu" if smoke else "cuda")
    dt = torch.float32 if smoke else torch.bfloat16
    if smoke:
        preset = ModelArgs(arch="llada", vocab_size=126464, dim=64, n_layers=4, n_heads=4, n_kv_heads=4, ffn_dim=128,
                           rope_theta=500000.0, max_seq_len=4096, mask_id=126336, eos_id=126081,
                           stop_ids=(126081, 126348), pad_id=126081)
        P, Tc, Tfull, B32, PLEN, GEN, PLEN32, GEN32 = 100, 17, 140, 4, 100, 64, 120, 32
    else:
        preset = "llada-8b"
        P, Tc, Tfull, B32, PLEN, GEN, PLEN32, GEN32 = 1012, 129, 1156, 32, 900, 256, 900, 256
    over = lambda: time.perf_counter() - T0 > a.budget_s  # noqa: E731

    def env():
        d = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(dev)}
        if dev.type == "cuda":
            p = torch.cuda.get_device_properties(dev)
            d.update(name=p.name, mem_gb=p.total_memory / 2**30, sms=p.multi_processor_count,
                     flash=torch.backends.cuda.flash_sdp_enabled(), mem_eff=torch.backends.cuda.mem_efficient_sdp_enabled(),
                     cudnn_sdp=getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)())
        return d

    section("env", a.out, env)

    def hw():
        n = (256 if smoke else 2048) << 20
        src = torch.empty(n, dtype=torch.uint8, device=dev).fill_(1)
        dst = torch.empty_like(src)
        r = timed(lambda: dst.copy_(src), dev, reps=10)
        res = {"copy_GBps": 2 * n / ((r["gpu_ms"] or r["wall_ms"]) / 1e3) / 1e9}
        del src, dst
        # (M, K, N): the cached step at batch 1 (M=129) for wq (N=4096), gate (N=12288), down (K=12288), fused QKV
        # (N=12288 from K=4096 is the same shape as gate); batch 32 cached (M=4128) and batch 32 full (M=36992).
        shapes = [(129, 4096, 4096), (129, 4096, 12288), (129, 12288, 4096), (129, 4096, 24576),
                  (4128, 4096, 12288), (36992, 4096, 12288)]
        if smoke:
            shapes = [(m, 64, 128) for m, _, _ in shapes[:3]]
        for m, K, N in shapes:
            x = torch.randn(m, K, device=dev, dtype=dt)
            w = torch.randn(N, K, device=dev, dtype=dt)
            r = timed(lambda: torch.nn.functional.linear(x, w), dev, reps=10)
            ms = r["gpu_ms"] or r["wall_ms"]
            key = f"gemm_M{m}_K{K}_N{N}"
            res[key] = {"ms": ms, "TFps": 2 * m * K * N / (ms / 1e3) / 1e12,
                        "weight_GBps": K * N * x.element_size() / (ms / 1e3) / 1e9}
            del x, w
        return res

    section("hw", a.out, hw)

    holder = {}

    def load():
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t = time.perf_counter()
        model = build_random_model(preset, device=dev, dtype=dt, compile=a.compile)
        sync(dev)
        res = {"build_s": time.perf_counter() - t, **mem(dev)}
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            res["reserved_after_empty_cache_gb"] = torch.cuda.memory_reserved(dev) / 1e9
            torch.cuda.reset_peak_memory_stats(dev)
        res["weight_gb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
        res["peak_over_weights"] = (res.get("peak_allocated_gb") or 0) / res["weight_gb"]
        res["fused"], res["torch_compiled"] = model.is_fused, model.compiled
        holder["model"] = model
        return res

    section("load", a.out, load)
    model = holder["model"]
    args = model.args
    # `model` stays referenced by the closures below; disk_load drops holder's reference and `model` before loading.
    V = args.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(0)

    def ids(B, T):
        return torch.randint(2, 126000, (B, T), generator=gen).to(dev)

    def fwd():
        res = {}
        with torch.inference_mode():
            cases = [("b1_cached_T%d_P%d" % (Tc, P), 1, Tc, P, False, 0),
                     ("b1_refresh_T%d" % (P + Tc), 1, P + Tc, 0, False, P),
                     ("b1_vanilla_T%d" % Tfull, 1, Tfull, 0, False, 0),
                     ("b32_cached_T%d_P%d" % (Tc, P), B32, Tc, P, False, 0),
                     ("b32_cached_masked", B32, Tc, P, True, 0),
                     ("b32_vanilla_T%d_masked" % Tfull, B32, Tfull, 0, True, 0)]
            for (label, switch), (name, B, T, PP, masked, keep) in (
                    (p, c) for c in cases for p in paths(model, a.compile)):
                name = label + name
                switch()
                if over():
                    res[name] = "skipped (budget)"
                    continue
                cache = synthetic_cache(args, B, PP, dev, dt, room=T) if PP else None
                x = ids(B, T)
                pos = torch.arange(PP, PP + T, device=dev)
                km = None
                if masked:
                    km = torch.ones(B, PP + T, dtype=torch.bool, device=dev)
                    km[B // 2:, :37] = False  # left padding on half the rows
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(dev)
                li = torch.arange(min(32, T), device=dev)
                fn = lambda: model(x, pos, cache=cache, key_mask=km, logits_index=li, keep_prefix=keep,  # noqa: E731
                                   max_position=4000)
                reps = 2 if (B > 1 and T > 500) else 5
                r = timed(fn, dev, reps=reps, warm=1)
                r.update({"tokens": B * T, "peak_allocated_gb": mem(dev).get("peak_allocated_gb")})
                res[name] = r
                del cache, x, km
        return res

    section("fwd", a.out, fwd)

    def prof():
        from torch.profiler import ProfilerActivity, profile
        res = {}
        li = torch.arange(min(32, Tc), device=dev)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with torch.inference_mode():
            for name, B in (("b1", 1), ("b32", B32)):
                cache = synthetic_cache(args, B, P, dev, dt, room=Tc)
                x, pos = ids(B, Tc), torch.arange(P, P + Tc, device=dev)
                fn = lambda: model(x, pos, cache=cache, logits_index=li, max_position=4000)  # noqa: E731
                fn()
                sync(dev)
                t = time.perf_counter()
                with profile(activities=acts) as p:
                    fn()
                    sync(dev)
                wall = (time.perf_counter() - t) * 1e3
                ka = p.key_averages()
                dev_evts = [e for e in ka if getattr(e, "self_device_time_total", 0) > 0 and
                            str(getattr(e, "device_type", "")).endswith("CUDA")]
                kernels = sum(e.count for e in dev_evts)
                busy = sum(e.self_device_time_total for e in dev_evts) / 1e3
                top = sorted(dev_evts, key=lambda e: -e.self_device_time_total)[:25]
                aten = sum(e.count for e in ka if e.key.startswith("aten::"))
                res[name] = {"wall_ms_under_profiler": wall, "cuda_kernels": kernels, "gpu_busy_ms": busy,
                             "aten_ops_incl_nested": aten,
                             "top": [(e.key[:90], e.count, round(e.self_device_time_total / 1e3, 3)) for e in top]}
                del cache
        return res

    section("prof", a.out, prof)

    def sdpa():
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
        B, H, D = B32, args.n_heads, args.head_dim
        q = torch.randn(B, H, Tc, D, device=dev, dtype=dt)
        k = torch.randn(B, H, P + Tc, D, device=dev, dtype=dt)
        v = torch.randn_like(k)
        m = torch.ones(B, 1, 1, P + Tc, dtype=torch.bool, device=dev)
        m[B // 2:, ..., :37] = False
        res = {}
        for label, backend, mask in (("flash_nomask", SDPBackend.FLASH_ATTENTION, None),
                                     ("flash_boolmask", SDPBackend.FLASH_ATTENTION, m),
                                     ("efficient_boolmask", SDPBackend.EFFICIENT_ATTENTION, m),
                                     ("efficient_nomask", SDPBackend.EFFICIENT_ATTENTION, None),
                                     ("math_boolmask", SDPBackend.MATH, m)):
            try:
                with sdpa_kernel([backend]):
                    r = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask), dev, reps=5)
                res[label] = r
            except Exception as exc:
                res[label] = f"refused: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        r = timed(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=m), dev, reps=5)
        res["default_boolmask"] = r
        res["kv_cat_one_layer"] = timed(lambda: torch.cat([k, k[:, :, :Tc]], dim=2), dev, reps=5)
        return res

    section("sdpa", a.out, sdpa)

    def compact():
        if over():
            return "skipped (budget)"
        Pc = P + 112
        cache = synthetic_cache(args, B32, Pc, dev, dt)
        keep = torch.arange(1, B32, device=dev)  # every row moves up one slot
        if dev.type == "cuda":
            sync(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        t = time.perf_counter()
        new = cache.select_rows(keep)
        sync(dev)
        res = {"ms": (time.perf_counter() - t) * 1e3,
               "cache_gb": sum(x.numel() * x.element_size() for x in new.keys + new.values) / 1e9}
        if dev.type == "cuda":
            res["extra_peak_gb"] = (torch.cuda.max_memory_allocated(dev) - base) / 1e9
        del cache, new
        return res

    section("compact", a.out, compact)

    def prop():
        res = {}
        for B in (1, B32):
            logits = torch.randn(B, 32, V, device=dev, dtype=dt)
            res[f"b{B}_fp64"] = timed(lambda: propose(logits, 0.0, None, args.mask_id), dev, reps=5)

            def fp32():
                lf = logits.float()
                lf[..., args.mask_id] = float("-inf")
                mx, tok = lf.max(-1)
                return tok, torch.exp(mx - torch.logsumexp(lf, -1))

            res[f"b{B}_fp32"] = timed(fp32, dev, reps=5)
            del logits
        return res

    section("propose", a.out, prop)

    def e2e():
        res = {}
        for label, switch in paths(model, a.compile):
            switch()
            e2e_path(res, label)
        return res

    def e2e_path(res, label):
        prompts = [torch.randint(2, 126000, (PLEN,), generator=gen).tolist()]
        for name, cfg in (("streaming_w96", DecodeConfig(mode="streaming", gen_length=GEN, block_size=32, window=96,
                                                         threshold=0.9, alpha=0.3)),
                          ("fast", DecodeConfig(mode="fast", gen_length=GEN, block_size=32, threshold=0.9)),
                          ("vanilla", DecodeConfig(mode="vanilla", gen_length=GEN, block_size=32, steps=GEN))):
            if over():
                res[label + name] = "skipped (budget)"
                continue
            generate(model, prompts, DecodeConfig(**{**cfg.to_dict(), "gen_length": 32,
                                                     **({"steps": 32} if cfg.mode == "vanilla" else {})}))
            c = generate(model, prompts, cfg).counters
            res[f"{label}b1_{name}"] = {"nfe": c.nfe, "wall_s": c.wall_time_s, "ms_per_step": c.wall_time_s / c.nfe * 1e3,
                                 "fed_per_forward": c.query_tokens / c.row_forwards}
        if not over():
            lens = [PLEN32 - 3 * i for i in range(B32)]
            prompts = [torch.randint(2, 126000, (n,), generator=gen).tolist() for n in lens]
            cfg = DecodeConfig(mode="streaming", gen_length=GEN32, block_size=32, window=96, threshold=0.9, alpha=0.3)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            c = generate(model, prompts, cfg).counters
            res[f"{label}b{B32}_streaming_padded"] = {"nfe": c.nfe, "wall_s": c.wall_time_s,
                                                      "ms_per_step": c.wall_time_s / c.nfe * 1e3, **mem(dev)}

    section("e2e", a.out, e2e)

    def comp():
        if a.no_compile or over():
            return "skipped"
        from decoder.model import Block
        res = {}
        for label, switch in paths(model, a.compile):
            switch()
            # a fresh block with layer 0's weights: model.layers[0] may already be torch.compile'd (--compile)
            block = Block(args).to(device=dev, dtype=dt)
            block.load_state_dict(model.layers[0].state_dict())
            block.fuse(model.is_fused)
            cblock = torch.compile(block, dynamic=False)
            with torch.inference_mode():
                for B in (1, B32):
                    x = torch.randn(B, Tc, args.dim, device=dev, dtype=dt)
                    pos = torch.arange(P, P + Tc, device=dev).expand(B, Tc)
                    if model.is_fused:
                        rope = model.rope_fused[pos]
                    else:
                        rope = (model.rope_cos[pos].unsqueeze(1), model.rope_sin[pos].unsqueeze(1))
                    kv = (torch.randn(B, args.n_kv_heads, P + Tc, args.head_dim, device=dev, dtype=dt),
                          torch.randn(B, args.n_kv_heads, P + Tc, args.head_dim, device=dev, dtype=dt))
                    res[f"{label}b{B}_eager_layer"] = timed(lambda: block(x, rope, None, kv, P), dev, reps=10)
                    t = time.perf_counter()
                    cblock(x, rope, None, kv, P)
                    sync(dev)
                    res[f"{label}b{B}_compile_s"] = time.perf_counter() - t
                    res[f"{label}b{B}_compiled_layer"] = timed(lambda: cblock(x, rope, None, kv, P), dev, reps=10)
        return res

    section("compile", a.out, comp)

    def disk_load():
        nonlocal model
        # The real loading path (decoder.loading.load_model: meta -> .to(dtype) -> to_empty -> safetensors copy):
        # seconds and peak GPU memory (before the dtype fix, an fp32 to_empty transient showed as ~2x the weights).
        if not a.disk_load or over():
            return "skipped (--disk-load not given, or budget)"
        import shutil
        import tempfile

        from decoder import load_model, save_checkpoint
        d = tempfile.mkdtemp(prefix="dtune_ckpt_", dir=os.environ.get("TMPDIR", "/tmp"))
        t = time.perf_counter()
        save_checkpoint(holder["model"], d, max_shard_bytes=5 << 30)
        res = {"save_s": time.perf_counter() - t}
        holder.clear()
        model = None  # drop the random model (its closures share this cell) before loading the checkpoint
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            res["allocated_before_load_gb"] = torch.cuda.memory_allocated(dev) / 1e9
            torch.cuda.reset_peak_memory_stats(dev)
        t = time.perf_counter()
        m2, _ = load_model(d, device=dev, dtype=dt, with_tokenizer=False)
        sync(dev)
        res.update(load_s=time.perf_counter() - t, **mem(dev))
        weights = sum(p.numel() * p.element_size() for p in m2.parameters()) / 1e9
        res.update(weight_gb=weights, peak_over_weights=(res.get("peak_allocated_gb") or 0) / weights)
        del m2
        shutil.rmtree(d, ignore_errors=True)
        return res

    section("disk_load", a.out, disk_load)
    RESULTS["total_s"] = time.perf_counter() - T0
    save(a.out)
    print(f"done in {RESULTS['total_s']:.0f}s -> {a.out}.json")


if __name__ == "__main__":
    main()
