"""A bidirectional Llama-style transformer: the shared body of the LLaDA and Dream architectures.

Written in the nanoGPT / gpt-fast style so the whole model reads in one sitting. Two things set it apart from a
causal LM and are why we do not reuse `transformers`' modelling code:

* **explicit position ids** on every call. Streaming-dLLM feeds a *pruned* sequence (a window of the suffix plus
  the very last position); RoPE must rotate every kept token at its true position, so positions can't be implied
  by the token index.
* **a prefix KV cache** that a call can read (keys/values of positions before the fed tokens) and create (keep the
  first `keep_prefix` positions of this call's keys/values). Keys are cached *after* RoPE: every cached position
  keeps its true id for the whole block, so rotating once is equivalent to the reference's re-rotation each step.

The cache lives in static buffers written in place (`PrefixCache`, `DiffusionLM.new_cache`): one per layer for a
whole generation, so a cached step neither concatenates nor allocates cache tensors.

Attention is bidirectional (`is_causal=False`) through `scaled_dot_product_attention`; a key-padding mask (additive,
built once per forward) is used only when a batch is left-padded. Two paths compute the same layer: the eager one,
op for op as the reference implementations write it, and the fused one (`DiffusionLM.fuse`, `compile=True` at
load): one QKV and one gate/up GEMM, `F.rms_norm`, RoPE on q and k in one pass, residual adds inside `addmm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelArgs:
    """Shapes and special token ids of one checkpoint; built from its config.json by `decoder.architectures`."""

    arch: str  # "llada" | "dream"
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    max_seq_len: int = 4096
    qkv_bias: bool = False
    tie_embeddings: bool = False
    mask_id: int = 126336
    eos_id: int = 126081
    # Ids that end an answer for token counting (EOS plus e.g. LLaDA's <|eot_id|>); EOS alone triggers early exit.
    stop_ids: tuple[int, ...] = field(default_factory=tuple)
    pad_id: int | None = None
    # Dream predicts token i from the logits at i-1; LLaDA from the logits at i.
    logits_shift: bool = False

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def answer_end_ids(self) -> frozenset[int]:
        """The ids that end an answer (EOS and `stop_ids`): where its generated tokens and its text stop."""
        return frozenset(self.stop_ids) | {self.eos_id}


class PrefixCache:
    """Per-layer post-RoPE keys/values of a prefix `[0, length)`, held in buffers that forwards write in place.

    Each buffer is (B, n_kv_heads, capacity, head_dim). Positions `[length, capacity)` are scratch: a forward that
    reads the cache writes its own keys/values at `[length, length + T)` and attends over `[0, length + T)`, so the
    prefix is never copied (no `torch.cat`, no new tensors per step) and one cache serves every step of a block.
    `key_mask` (B, length) is False at padding positions, or None when no position is padding.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], key_mask: torch.Tensor | None,
                 length: int | None = None):
        self.k_buf, self.v_buf = list(keys), list(values)
        self.key_mask = key_mask
        self.length = length if length is not None else (self.k_buf[0].shape[2] if self.k_buf else 0)

    @property
    def keys(self) -> list[torch.Tensor]:
        return [k[:, :, : self.length] for k in self.k_buf]

    @property
    def values(self) -> list[torch.Tensor]:
        return [v[:, :, : self.length] for v in self.v_buf]

    @property
    def capacity(self) -> int:
        return self.k_buf[0].shape[2] if self.k_buf else 0

    def empty_rows(self, n: int) -> PrefixCache:
        """An empty cache (length 0) over the first `n` row slots of these buffers: a block's refresh fills it."""
        return PrefixCache([k[:n] for k in self.k_buf], [v[:n] for v in self.v_buf], None, length=0)

    def reserve(self, length: int) -> None:
        """Grow the buffers (copying the prefix once) when a forward needs positions beyond the capacity."""
        if length <= self.capacity:
            return
        for bufs in (self.k_buf, self.v_buf):
            for i, b in enumerate(bufs):
                grown = b.new_empty((*b.shape[:2], length, b.shape[3]))
                grown[:, :, : self.length].copy_(b[:, :, : self.length])
                bufs[i] = grown

    def select_rows(self, rows: torch.Tensor) -> PrefixCache:
        """The cache of a subset of the batch rows, compacted in place into the first `len(rows)` row slots."""
        n = rows.numel()
        kept: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        for bufs, out in zip((self.k_buf, self.v_buf), kept, strict=True):
            for b in bufs:
                b[:n].copy_(b.index_select(0, rows))
                out.append(b[:n])
        mask = None if self.key_mask is None else self.key_mask[rows]
        return PrefixCache(kept[0], kept[1], mask, self.length)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 as both reference implementations do; cast back before the scale.
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(x.dtype) * self.weight

    def fused(self, x: torch.Tensor) -> torch.Tensor:
        """The same norm as one kernel (`F.rms_norm`: float32 statistics inside, scale applied before the cast)."""
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rope_tables(head_dim: int, theta: float, max_len: int, device: torch.device | None = None):
    """cos/sin tables (max_len, head_dim) in float32, half-split (NeoX / HF) layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def fused_rope_table(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(max_len, 2, head_dim): cos, and sin with its first half negated, so that RoPE is
    `x * cos + roll(x, D/2) * sin_signed` (roll(x) = [x2, x1]; [-x2, x1] * sin = [x2, x1] * [-sin, sin])."""
    half = cos.shape[-1] // 2
    return torch.stack([cos, torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)], dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by per-token cos/sin of shape (B, 1, T, D); computed in float32."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Bidirectional SDPA of q (B, Hq, T, D) over k, v (B, Hkv, S, D); mask: additive (B, 1, 1, S) or None.

    Grouped-query attention (Hkv < Hq, Dream) folds each KV head's `Hq/Hkv` query heads into its query axis
    instead of repeating K/V: one (B, Hkv, rep*T, D) attention, with any mask and any kernel (SDPA's
    `enable_gqa` would drop to the math kernel under a mask, and needs torch >= 2.5).
    """
    bsz, n_heads, seqlen, head_dim = q.shape
    n_kv = k.shape[1]
    if n_kv == n_heads:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=False)
    folded = q.reshape(bsz, n_kv, (n_heads // n_kv) * seqlen, head_dim)
    out = F.scaled_dot_product_attention(folded, k, v, attn_mask=mask, is_causal=False)
    return out.view(bsz, n_heads, seqlen, head_dim)


def _cached_kv(k: torch.Tensor, v: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None, offset: int):
    """Write this call's k, v (B, Hkv, T, D) into the cache buffers at [offset, offset + T) and return the keys and
    values to attend over, [0, offset + T); without a cache, k and v themselves."""
    if kv is None:
        return k, v
    k_buf, v_buf = kv
    end = offset + k.shape[2]
    k_buf[:, :, offset:end].copy_(k)
    v_buf[:, :, offset:end].copy_(v)
    return k_buf[:, :, :end], v_buf[:, :, :end]


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=args.qkv_bias)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=args.qkv_bias)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=args.qkv_bias)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)
        self.wqkv: torch.Tensor | None = None  # set by `fuse`
        self.bqkv: torch.Tensor | None = None

    def forward(self, x, cos, sin, attn_mask, kv, offset):
        bsz, seqlen, _ = x.shape
        q = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = _cached_kv(k, v, kv, offset)
        out = attend(q, k, v, attn_mask)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1))

    def fuse(self) -> None:
        """One QKV weight; wq/wk/wv become views of it, so the parameters (and checkpoints) stay as they were."""
        self.wqkv = _fuse_weights(self.wq, self.wk, self.wv)
        if self.wq.bias is not None:
            self.bqkv = _fuse_weights(self.wq, self.wk, self.wv, attr="bias")

    def fused(self, h, x, rope, attn_mask, kv, offset):
        """x + attention(h): one QKV GEMM, RoPE on q and k in one pass (float32 math), the output projection and
        the residual add in one GEMM (`addmm`)."""
        bsz, seqlen, dim = x.shape
        nq, nkv = self.n_heads, self.n_kv_heads
        qkv = F.linear(h, self.wqkv, self.bqkv).view(bsz, seqlen, nq + 2 * nkv, self.head_dim)
        qk = qkv[:, :, : nq + nkv]
        # rope (B, T, 2, D) float32: qk is promoted inside the kernels, no separate cast
        rot = torch.addcmul(qk * rope[:, :, :1], qk.roll(self.head_dim // 2, dims=-1), rope[:, :, 1:])
        if rot.dtype != x.dtype:
            rot = rot.to(x.dtype)
        q = rot[:, :, :nq].transpose(1, 2)
        k, v = _cached_kv(rot[:, :, nq:].transpose(1, 2), qkv[:, :, nq + nkv :].transpose(1, 2), kv, offset)
        out = attend(q, k, v, attn_mask).transpose(1, 2).reshape(bsz * seqlen, nq * self.head_dim)
        return torch.addmm(x.reshape(bsz * seqlen, dim), out, self.wo.weight.t()).view(bsz, seqlen, dim)


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w_gate = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w_up = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w_down = nn.Linear(args.ffn_dim, args.dim, bias=False)
        self.w_gate_up: torch.Tensor | None = None  # set by `fuse`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))

    def fuse(self) -> None:
        self.w_gate_up = _fuse_weights(self.w_gate, self.w_up)

    def fused(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x + w_down(silu(gate) * up): one gate/up GEMM, and the residual add inside the down GEMM."""
        bsz, seqlen, dim = x.shape
        gate, up = F.linear(h, self.w_gate_up).chunk(2, dim=-1)
        act = F.silu(gate).mul_(up).view(bsz * seqlen, -1)
        return torch.addmm(x.reshape(bsz * seqlen, dim), act, self.w_down.weight.t()).view(bsz, seqlen, dim)


def _fuse_weights(*linears: nn.Linear, attr: str = "weight") -> torch.Tensor:
    """The linears' weights (or biases) concatenated along the output axis; each linear's own parameter becomes a
    view of the result, so fusing allocates nothing that stays twice."""
    fused = torch.cat([getattr(lin, attr).detach() for lin in linears])
    row = 0
    for lin in linears:
        p = getattr(lin, attr)
        p.data = fused[row : row + p.shape[0]]
        row += p.shape[0]
    return fused


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attn_norm = RMSNorm(args.dim, args.norm_eps)
        self.attn = Attention(args)
        self.mlp_norm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = FeedForward(args)
        self.is_fused = False

    def forward(self, x, rope, attn_mask, kv, offset):
        """x (B, T, dim) -> x after this layer. rope: (cos, sin) each (B, 1, T, D) on the eager path, the gathered
        `fused_rope_table` rows (B, T, 2, D) on the fused one; kv: this layer's cache buffers (written at
        [offset, offset + T)) or None; attn_mask: additive (B, 1, 1, keys) or None."""
        if self.is_fused:
            x = self.attn.fused(self.attn_norm.fused(x), x, rope, attn_mask, kv, offset)
            return self.mlp.fused(self.mlp_norm.fused(x), x)
        x = x + self.attn(self.attn_norm(x), *rope, attn_mask, kv, offset)
        return x + self.mlp(self.mlp_norm(x))

    def fuse(self, enabled: bool = True) -> None:
        if enabled and self.attn.wqkv is None:
            self.attn.fuse()
            self.mlp.fuse()
        self.is_fused = enabled


class DiffusionLM(nn.Module):
    """Embedding, `n_layers` bidirectional blocks, final norm and LM head."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.lm_head = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        # RoPE tables cover the first 8k positions and grow on demand (Dream allows 131k: 128 MB of tables).
        n = min(args.max_seq_len, 8192)
        if torch.empty(0).device.type == "meta":  # built to be materialised (decoder.loading): shapes only
            cos = sin = torch.empty(n, args.head_dim)
        else:
            cos, sin = rope_tables(args.head_dim, args.rope_theta, n)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.rope_fused: torch.Tensor | None = None  # fused_rope_table, once `fuse` is called
        self.compiled = False  # set by `decoder.loading` when the blocks run through torch.compile

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    @property
    def is_fused(self) -> bool:
        return self.rope_fused is not None

    def fuse(self, enabled: bool = True) -> DiffusionLM:
        """Switch every block to the fused path (fewer, larger kernels; float32 math inside; the same tokens as the
        eager path up to float rounding). Call it once the weights are loaded and on their device. The fused
        weights are built once; `fuse(False)` goes back to the eager path (for side-by-side measurements)."""
        for layer in self.layers:
            layer.fuse(enabled)
        self.rope_fused = fused_rope_table(self.rope_cos, self.rope_sin) if enabled else None
        return self

    def new_cache(self, batch: int, capacity: int) -> PrefixCache:
        """An empty per-generation cache: for every layer, (batch, n_kv_heads, capacity, head_dim) K and V buffers
        in the model's dtype, on its device, that every block's refresh and cached steps write in place."""
        shape = (batch, self.args.n_kv_heads, capacity, self.args.head_dim)
        n = self.args.n_layers
        return PrefixCache([self.embed.weight.new_empty(shape) for _ in range(n)],
                           [self.embed.weight.new_empty(shape) for _ in range(n)], None, length=0)

    def init_weights(self, std: float = 0.02, generator: torch.Generator | None = None) -> None:
        """Random init (normal(0, std), norms at 1): for random-weight models of real shapes and for training."""
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
            else:
                with torch.no_grad():
                    p.normal_(0.0, std, generator=generator)

    def _ensure_rope(self, length: int) -> None:
        if length <= self.rope_cos.shape[0]:
            return
        if length > self.args.max_seq_len:
            raise ValueError(f"position {length - 1} exceeds the model's max_seq_len {self.args.max_seq_len}")
        new_len = min(self.args.max_seq_len, max(length, 2 * self.rope_cos.shape[0]))
        cos, sin = rope_tables(self.args.head_dim, self.args.rope_theta, new_len, self.rope_cos.device)
        self.rope_cos, self.rope_sin = cos, sin
        if self.rope_fused is not None:
            self.rope_fused = fused_rope_table(cos, sin)

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        *,
        cache: PrefixCache | None = None,
        key_mask: torch.Tensor | None = None,
        keep_prefix: int = 0,
        logits_index: torch.Tensor | None = None,
        max_position: int | None = None,
    ) -> tuple[torch.Tensor, PrefixCache | None]:
        """Run the model on `input_ids` (B, T) placed at `position_ids` (B, T) or (T,).

        cache:        keys/values of a prefix that the fed tokens attend to (in addition to each other). This call
                      writes its own keys/values into the cache's buffers after the prefix (growing them only when
                      they are too short); the prefix itself is left as it was, so a cache can be read many times.
        key_mask:     (B, cache.length + T) bool, False at padding keys; None when nothing is padded. It becomes one
                      additive mask for every layer.
        keep_prefix:  return a PrefixCache that extends `cache` (if any; else a new one) with this call's
                      keys/values of fed positions [0, keep_prefix); it shares `cache`'s buffers.
        logits_index: (n,) indices into the fed tokens whose logits are wanted; the LM head (the largest matmul
                      for a 126k vocabulary) runs only there. None = all positions.
        max_position: an upper bound on `position_ids` that the caller knows (generate: the sequence length - 1).
                      It sizes the RoPE tables without reading the ids back from the device, which would be a
                      host-device sync on every forward. None = read the maximum.
        Returns (logits (B, n or T, vocab), new cache or None).
        """
        bsz, seqlen = input_ids.shape
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0).expand(bsz, seqlen)
        self._ensure_rope((int(position_ids.max()) if max_position is None else max_position) + 1)
        if self.rope_fused is not None:
            rope = self.rope_fused[position_ids]
        else:
            rope = (self.rope_cos[position_ids].unsqueeze(1), self.rope_sin[position_ids].unsqueeze(1))
        if cache is None and keep_prefix:
            cache = self.new_cache(bsz, seqlen)
        offset = 0
        if cache is not None:
            offset = cache.length
            cache.reserve(offset + seqlen)
        x = self.embed(input_ids)
        attn_mask = None
        if key_mask is not None:  # additive, built once for all layers (SDPA would convert a bool mask per layer)
            attn_mask = x.new_zeros(bsz, 1, 1, key_mask.shape[1]).masked_fill_(~key_mask[:, None, None, :],
                                                                                float("-inf"))
        for i, layer in enumerate(self.layers):
            kv = (cache.k_buf[i], cache.v_buf[i]) if cache is not None else None
            x = layer(x, rope, attn_mask, kv, offset)
        if logits_index is not None:
            x = x[:, logits_index]
        logits = self.lm_head(self.norm.fused(x) if self.is_fused else self.norm(x))
        new_cache = None
        if keep_prefix:
            assert cache is not None
            length = offset + keep_prefix
            new_cache = PrefixCache(cache.k_buf, cache.v_buf, None if key_mask is None else key_mask[:, :length],
                                    length)
        return logits, new_cache
