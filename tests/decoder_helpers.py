"""Small models shared by the decoder tests: real `DiffusionLM`s with random weights, and a scripted oracle."""

from __future__ import annotations

import torch
from torch import nn

from decoder import build_random_model
from decoder.model import ModelArgs

MASK, EOS, EOT, PAD = 63, 1, 2, 1


def tiny_args(arch: str = "llada", **overrides) -> ModelArgs:
    base = dict(arch=arch, vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=128, max_seq_len=2048,
                mask_id=MASK, eos_id=EOS, stop_ids=(EOS, EOT), pad_id=PAD)
    if arch == "dream":
        base.update(n_kv_heads=2, qkv_bias=True, logits_shift=True, stop_ids=(EOS,))
    base.update(overrides)
    return ModelArgs(**base)


def random_model(arch: str = "llada", seed: int = 0, std: float = 0.5, **overrides):
    """A random model with peaky output distributions (std 0.5) so thresholds commit several tokens per step."""
    return build_random_model(tiny_args(arch, **overrides), seed=seed, std=std)


class ScriptedLM(nn.Module):
    """An oracle whose prediction at each position depends only on the position id: token `target(q)` with
    probability `confidence(q)`. Caching and pruning can't change its logits, so tests can assert the decode
    loop's bookkeeping exactly (which step commits what, when a row exits), independent of model numerics.
    """

    def __init__(self, target, confidence, vocab: int = 64):
        super().__init__()
        self.args = tiny_args()
        self.target, self.confidence, self.vocab = target, confidence, vocab
        self.anchor = nn.Parameter(torch.zeros(1))
        self.calls: list[dict] = []

    @property
    def device(self):
        return self.anchor.device

    def forward(self, input_ids, position_ids, *, cache=None, key_mask=None, keep_prefix=0, logits_index=None,
                max_position=None):
        from decoder.model import PrefixCache

        bsz, seqlen = input_ids.shape
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0).expand(bsz, seqlen)
        assert max_position is None or int(position_ids.max()) <= max_position, "max_position is not a bound"
        self.calls.append({"rows": bsz, "fed": seqlen, "cache": 0 if cache is None else cache.length})
        pos = position_ids if logits_index is None else position_ids[:, logits_index]
        logits = torch.empty((*pos.shape, self.vocab), dtype=torch.float64)
        for r in range(bsz):
            for j, q in enumerate(pos[r].tolist()):
                tok, p = self.target(q), self.confidence(q)
                logits[r, j] = torch.tensor(max(1 - p, 1e-12) / (self.vocab - 1)).log()  # the rest spread evenly
                logits[r, j, tok] = torch.tensor(p).log()
        new_cache = None
        if keep_prefix:
            dummy = torch.zeros(bsz, 1, keep_prefix, 1)
            new_cache = PrefixCache([dummy], [dummy], None if key_mask is None else key_mask[:, :keep_prefix])
        return logits, new_cache
