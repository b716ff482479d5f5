"""Which masked tokens a denoising step commits: proposals, confidences and the three commit rules.

All rules work on the current block only, vectorised over rows (no Python loop over tokens or rows).
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def propose(logits: torch.Tensor, temperature: float, generator: torch.Generator | None, mask_id: int):
    """Proposed token and its confidence at every position of `logits` (R, K, V).

    The mask token itself is never proposed: committing it would be a no-op that leaves the position masked
    (a trained model gives it ~0 probability; an untrained one may not, and the threshold loop would spin).

    Greedy (temperature 0) takes the argmax; otherwise Gumbel-max sampling in float64 (low-precision Gumbel noise
    hurts quality, as LLaDA notes), i.e. an exact sample from softmax(logits / T). The confidence is the softmax
    probability of the proposed token under the un-noised logits, in float64 as Fast-dLLM computes it, so
    threshold comparisons near 0.9 don't flip with the model's dtype. The logits are read once (into float64);
    greedy decoding takes the token and its logit in one pass over that copy, and the softmax normaliser in another.
    """
    logits64 = logits.double()
    logits64[..., mask_id] = NEG_INF
    if temperature > 0:
        u = torch.rand(logits64.shape, dtype=torch.float64, device=logits.device, generator=generator)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
        tokens = (logits64 / temperature + gumbel).argmax(-1)
        chosen = logits64.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    else:  # one reduction gives the argmax (the first maximum, as argmax picks it) and its logit
        chosen, tokens = logits64.max(-1)
    conf = torch.exp(chosen - torch.logsumexp(logits64, dim=-1))
    return tokens, conf


def commit_quota(conf: torch.Tensor, masked: torch.Tensor, quota: int) -> torch.Tensor:
    """LLaDA's low-confidence remasking: commit the `quota` most confident masked positions of each row."""
    scores = conf.masked_fill(~masked, NEG_INF)
    top = scores.topk(min(quota, scores.shape[1]), dim=1).indices
    take = torch.zeros_like(masked)
    take.scatter_(1, top, True)
    return take & masked


def commit_threshold(conf: torch.Tensor, masked: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Fast-dLLM's rule: every masked position with conf >= tau, and always the most confident one.

    `tau` is a scalar or a per-row (R,) tensor. Rows without masks commit nothing.
    """
    scores = conf.masked_fill(~masked, NEG_INF)
    # a Python float stays a scalar argument (a tensor made from it would be a host-to-device copy on CUDA)
    take = scores >= (tau.to(scores.dtype).unsqueeze(-1) if isinstance(tau, torch.Tensor) else tau)
    take.scatter_(1, scores.argmax(1, keepdim=True), True)
    return take & masked


def commit_first(masked: torch.Tensor) -> torch.Tensor:
    """Dream's first step of a block: exactly the block's first position (argmax, no threshold)."""
    take = torch.zeros_like(masked)
    take[:, 0] = True
    return take & masked


def dynamic_threshold(tau0: float, alpha: float, mask_ratio: torch.Tensor) -> torch.Tensor:
    """Streaming-dLLM's threshold tau0 * (1 - alpha * (1 - r)), r = masked fraction of the fed region after the
    prefix, per row. Relaxes as the block fills so converged tokens are accepted sooner; alpha=0 gives tau0."""
    return tau0 * (1.0 - alpha * (1.0 - mask_ratio.double()))


def quota_schedule(masked: int, steps: int) -> list[int]:
    """Tokens per step when `masked` tokens are unmasked in `steps` steps: even, remainder on the first steps."""
    base, extra = divmod(masked, steps)
    return [base + (1 if j < extra else 0) for j in range(steps)]
