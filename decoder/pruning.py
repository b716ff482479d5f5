"""Streaming-dLLM's suffix pruning: which positions of the sequence are fed while a block is being decoded.

At a block [s, e) of a sequence of total length L, the fed positions are 0..e-1, then the first `window`
positions after the block, then the trailing position L-1 — the last only when the suffix is longer than the
window (otherwise the window already reaches it). Every position after the block is still a mask, so the pruned
input is the first `kept_end` tokens plus the last one, each fed with its *true* position id.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FedLayout:
    """Fed positions (in sequence coordinates) for one block: [0, kept_end) plus `L-1` when `tail`."""

    block_start: int
    block_end: int
    kept_end: int
    total_len: int
    tail: bool

    @property
    def length(self) -> int:
        return self.kept_end + int(self.tail)

    def positions(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Sequence indices of the fed tokens, in order; also their position offsets before left padding."""
        idx = torch.arange(self.length, device=device)
        if self.tail:  # a fill on the device: a host tensor copied over would be a host-device sync on CUDA
            idx[-1] = self.total_len - 1
        return idx

    @property
    def after_prefix(self) -> int:
        """Tokens fed on cached steps: block + window + trailing position."""
        return self.length - self.block_start


def fed_layout(total_len: int, block_start: int, block_end: int, window: int | None) -> FedLayout:
    """The layout for one block; `window=None` keeps the whole suffix (Fast-dLLM)."""
    suffix = total_len - block_end
    if window is None or suffix <= window:
        return FedLayout(block_start, block_end, total_len, total_len, tail=False)
    return FedLayout(block_start, block_end, block_end + window, total_len, tail=True)
