"""A bidirectional Llama-style transformer: the shared body of the LLaDA and Dream architectures.

Written in the nanoGPT / gpt-fast style so the whole model reads in one sitting. Two things set it apart from a
causal LM and are why we do not reuse `transformers`' modelling code:

* **explicit position ids** on every call. Streaming-dLLM feeds a *pruned* sequence (a window of the suffix plus
  the very last position); RoPE must rotate every kept token at its true position, so positions can't be implied
  by the token index.
* **a prefix KV cache** that a call can read (keys/values of positions before the fed tokens) and create (keep the
  first `keep_prefix` positions of this call's keys/values). Keys are cached *after* RoPE: every cached position
  keeps its true id for the whole block, so rotating once is equivalent to the reference's re-rotation each step.

Attention is bidirectional (`is_causal=False`) through `scaled_dot_product_attention`; a key-padding mask is used
only when a batch is left-padded.
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
    """Per-layer post-RoPE keys/values of a prefix `[0, length)`, plus which prefix positions are real tokens."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], key_mask: torch.Tensor | None):
        self.keys = keys  # each (B, n_kv_heads, length, head_dim)
        self.values = values
        self.key_mask = key_mask  # (B, length) bool, or None when no position is padding

    @property
    def length(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    def select_rows(self, rows: torch.Tensor) -> PrefixCache:
        """The cache of a subset of the batch rows (rows that finished a block stop being computed)."""
        mask = None if self.key_mask is None else self.key_mask[rows]
        return PrefixCache([k[rows] for k in self.keys], [v[rows] for v in self.values], mask)


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


def rope_tables(head_dim: int, theta: float, max_len: int, device: torch.device | None = None):
    """cos/sin tables (max_len, head_dim) in float32, half-split (NeoX / HF) layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device=device) / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by per-token cos/sin of shape (B, 1, T, D); computed in float32."""
    xf = x.float()
    half = xf.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = args.n_heads, args.n_kv_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.n_heads * self.head_dim, bias=args.qkv_bias)
        self.wk = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=args.qkv_bias)
        self.wv = nn.Linear(args.dim, args.n_kv_heads * self.head_dim, bias=args.qkv_bias)
        self.wo = nn.Linear(args.n_heads * self.head_dim, args.dim, bias=False)

    def forward(self, x, cos, sin, attn_mask, past_k, past_v):
        bsz, seqlen, _ = x.shape
        q = self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(bsz, seqlen, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        new_k, new_v = k, v
        if past_k is not None:
            k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
        if self.n_kv_heads != self.n_heads:  # grouped-query attention (Dream)
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        return self.wo(out.transpose(1, 2).reshape(bsz, seqlen, -1)), new_k, new_v


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.w_gate = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w_up = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w_down = nn.Linear(args.ffn_dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attn_norm = RMSNorm(args.dim, args.norm_eps)
        self.attn = Attention(args)
        self.mlp_norm = RMSNorm(args.dim, args.norm_eps)
        self.mlp = FeedForward(args)

    def forward(self, x, cos, sin, attn_mask, past_k, past_v):
        h, k, v = self.attn(self.attn_norm(x), cos, sin, attn_mask, past_k, past_v)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), k, v


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
        cos, sin = rope_tables(args.head_dim, args.rope_theta, min(args.max_seq_len, 8192))
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

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

        cache:        keys/values of a prefix that the fed tokens attend to (in addition to each other).
        key_mask:     (B, cache.length + T) bool, False at padding keys; None when nothing is padded.
        keep_prefix:  return a new PrefixCache that extends `cache` (if any) with this call's keys/values of fed
                      positions [0, keep_prefix).
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
        cos = self.rope_cos[position_ids].unsqueeze(1)
        sin = self.rope_sin[position_ids].unsqueeze(1)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        x = self.embed(input_ids)
        kept_k: list[torch.Tensor] = []
        kept_v: list[torch.Tensor] = []
        for i, layer in enumerate(self.layers):
            past_k = cache.keys[i] if cache is not None else None
            past_v = cache.values[i] if cache is not None else None
            x, k, v = layer(x, cos, sin, attn_mask, past_k, past_v)
            if keep_prefix:
                k, v = k[:, :, :keep_prefix], v[:, :, :keep_prefix]
                if past_k is not None:
                    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
                kept_k.append(k.contiguous())
                kept_v.append(v.contiguous())
        if logits_index is not None:
            x = x[:, logits_index]
        logits = self.lm_head(self.norm(x))
        new_cache = None
        if keep_prefix:
            prefix_mask = None
            if key_mask is not None:
                offset = cache.length if cache is not None else 0
                prefix_mask = key_mask[:, : offset + keep_prefix]
            new_cache = PrefixCache(kept_k, kept_v, prefix_mask)
        return logits, new_cache
