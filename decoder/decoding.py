"""`generate()`: block-wise diffusion decoding in the three modes of `DecodeConfig`, with exact cost counters.

The answer region (gen_length masks after the prompt) is decoded block by block, left to right.

* vanilla: each step is a full forward over prompt + answer (no cache); a fixed quota of the block's most
  confident masks is committed per step.
* fast / streaming: a block starts with a *refresh* forward over the fed sequence (the whole sequence, or for
  streaming the pruned one) that also caches the keys/values of every position before the block; the refresh's
  logits give the block's first step. Later steps feed only block + (window) suffix (+ trailing position) against
  that cache, until the block has no mask. Commit rule: threshold (dynamic in streaming) plus the forced argmax.

Rows of a batch are left-padded (pads masked out of attention, position ids counted from each row's first real
token) so a batch of N equals N single runs. A row whose block is complete waits for the block's other rows with
nothing to commit (it stays in the batch of the cached steps until half the rows are done, so their shapes stay
fixed), and leaves the computation for good once it early-exits. Keys/values live in one static buffer per layer
for the whole generation (`DiffusionLM.new_cache`), written in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .architectures import ARCHITECTURES
from .config import DecodeConfig
from .counters import Counters
from .errors import ConfigError
from .model import DiffusionLM, PrefixCache
from .prompts import encode_prompt
from .pruning import fed_layout
from .selection import (
    commit_first,
    commit_quota,
    commit_threshold,
    dynamic_threshold,
    propose,
    quota_schedule,
)


@dataclass
class GenerationResult:
    """Answer ids (B, gen_length) with EOS filled after an early exit, decoded texts, counters, optional trace."""

    tokens: torch.Tensor
    counters: Counters
    texts: list[str] | None = None
    row_nfe: list[int] = field(default_factory=list)
    generated_per_row: list[int] = field(default_factory=list)
    trace: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class BlockEvent:
    """One committed block of every row, handed to `generate(on_block=...)` on the host after the block's early exit.

    index: block number (0-based); start: its offset in the answer region (index * block_size); tokens: (B,
    block_size) CPU ids of this block for every row; active: per row, still decoding after this block (False once a
    row early-exited or was cancelled).
    """

    index: int
    start: int
    tokens: torch.Tensor
    active: tuple[bool, ...]


# May return row indices to cancel: they stop from the next block on, as after an early exit (EOS-filled).
OnBlock = Callable[[BlockEvent], Iterable[int] | None]


class _Tracer:
    """Records what each forward fed and committed; only for tests and debugging (it syncs the device).

    Callers check `enabled` before building a record, so an untraced run doesn't launch the indexing and sums a
    record needs on every step.
    """

    def __init__(self, enabled: bool):
        self.steps: list[dict[str, Any]] | None = [] if enabled else None

    @property
    def enabled(self) -> bool:
        return self.steps is not None

    def record(self, **info: Any) -> None:
        if self.steps is not None:
            self.steps.append({k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in info.items()})


@torch.inference_mode()
def generate(
    model: DiffusionLM,
    prompts: Sequence[Sequence[int]] | Sequence[str],
    config: DecodeConfig,
    *,
    tokenizer: Any = None,
    trace: bool = False,
    on_block: OnBlock | None = None,
) -> GenerationResult:
    """Decode an answer for each prompt (token id lists, or strings with `tokenizer`).

    `on_block`, if given, sees each block once it is committed (`BlockEvent`) and may return rows to cancel.

    Wall time covers the whole call (tokenisation included when strings are given), with the device synchronised
    at both ends.
    """
    _sync(model.device)
    t0 = time.perf_counter()
    prompt_ids = _tokenize(prompts, tokenizer)
    state = _State.create(model, prompt_ids, config, trace)
    arch = ARCHITECTURES[model.args.arch]
    for block in range(config.gen_length // config.block_size):
        rows = state.active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        start = state.prompt_len + block * config.block_size
        end = start + config.block_size
        if config.mode == "vanilla":
            _vanilla_block(state, rows, block, start, end)
        else:
            _cached_block(state, rows, block, start, end, arch.first_step_rule)
        if config.early_exit:
            _early_exit(state, rows, end)
        if on_block is not None:
            _notify(state, on_block, block, start, end)
    tokens = state.x[:, state.prompt_len :]
    _count_generated(state, tokens)
    _sync(model.device)
    state.counters.wall_time_s = time.perf_counter() - t0
    texts = None
    if tokenizer is not None:
        texts = [tokenizer.decode(t[: n].tolist(), skip_special_tokens=True)
                 for t, n in zip(tokens, state.generated_per_row, strict=True)]
    return GenerationResult(
        tokens=tokens.cpu(),
        counters=state.counters,
        texts=texts,
        row_nfe=state.row_nfe.tolist(),
        generated_per_row=state.generated_per_row,
        trace=state.tracer.steps,
    )


@dataclass
class _State:
    model: DiffusionLM
    config: DecodeConfig
    x: torch.Tensor  # (B, P+G) token ids
    pos: torch.Tensor  # (B, P+G) true position ids
    key_mask: torch.Tensor | None  # (B, P+G) False at left padding; None without padding
    prompt_len: int
    active: torch.Tensor  # (B,) bool: not early-exited
    row_nfe: torch.Tensor  # (B,) forwards each row took part in
    counters: Counters
    tracer: _Tracer
    generator: torch.Generator | None
    generated_per_row: list[int] = field(default_factory=list)
    buffers: PrefixCache | None = None

    def cache_buffers(self) -> PrefixCache | None:
        """The generation's KV buffers (every row, the whole sequence), allocated at the first refresh and reused
        by every block; None for a model that brings its own caches (no `new_cache`)."""
        if self.buffers is None and hasattr(self.model, "new_cache"):
            self.buffers = self.model.new_cache(self.x.shape[0], self.x.shape[1])
        return self.buffers

    @property
    def last_position(self) -> int:
        """An upper bound on every position id (ids count from a row's first real token), known on the host."""
        return self.x.shape[1] - 1

    @classmethod
    def create(cls, model: DiffusionLM, prompt_ids: list[list[int]], config: DecodeConfig, trace: bool) -> _State:
        args, dev = model.args, model.device
        if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
            raise ConfigError("every prompt needs at least one token")
        plen = max(len(p) for p in prompt_ids)
        total = plen + config.gen_length
        if total > args.max_seq_len:
            raise ConfigError(f"prompt ({plen}) + gen_length ({config.gen_length}) exceeds the model's "
                              f"max_seq_len ({args.max_seq_len})")
        pad_id = args.pad_id if args.pad_id is not None else args.eos_id
        x = torch.full((len(prompt_ids), total), args.mask_id, dtype=torch.long)
        pads = torch.tensor([plen - len(p) for p in prompt_ids])
        for r, p in enumerate(prompt_ids):
            x[r, : pads[r]] = pad_id
            x[r, pads[r] : plen] = torch.tensor(p, dtype=torch.long)
        pos = (torch.arange(total).unsqueeze(0) - pads.unsqueeze(1)).clamp_min(0)
        key_mask = None
        if int(pads.max()) > 0:
            key_mask = (torch.arange(total).unsqueeze(0) >= pads.unsqueeze(1)).to(dev)
        gen = None
        if config.temperature > 0:
            gen = torch.Generator(device=dev)
            gen.manual_seed(config.seed if config.seed is not None else torch.seed())
        n = len(prompt_ids)
        return cls(model, config, x.to(dev), pos.to(dev), key_mask, plen, torch.ones(n, dtype=torch.bool, device=dev),
                   torch.zeros(n, dtype=torch.long, device=dev), Counters(), _Tracer(trace), gen)


def _logits_index(start: int, end: int, offset: int, shift: bool, device) -> torch.Tensor:
    """Indices into the fed tokens whose logits predict block positions [start, end).

    The fed tokens begin at sequence position `offset`. Dream (shift) predicts position i from the logits at
    i-1; when i-1 was not fed (cached steps) the first fed position reuses its own logits, as the reference does —
    harmless because on cached steps that position is already decoded (Dream commits it at the refresh step).
    """
    idx = torch.arange(start, end, device=device) - offset
    if shift:
        idx = (idx - 1).clamp_min(0)
    return idx


def _vanilla_block(state: _State, rows: torch.Tensor, block: int, start: int, end: int) -> None:
    cfg, model = state.config, state.model
    steps = cfg.steps // (cfg.gen_length // cfg.block_size)
    key_mask = None if state.key_mask is None else state.key_mask[rows]
    logits_idx = _logits_index(start, end, 0, model.args.logits_shift, state.x.device)
    for step, quota in enumerate(quota_schedule(cfg.block_size, steps)):
        xs = state.x[rows]
        logits, _ = model(xs, state.pos[rows], key_mask=key_mask, logits_index=logits_idx,
                          max_position=state.last_position)
        _count(state, rows, fed=xs.shape[1], keys=xs.shape[1])
        tokens, conf = propose(logits, cfg.temperature, state.generator, model.args.mask_id)
        masked = xs[:, start:end] == model.args.mask_id
        take = commit_quota(conf, masked, quota)
        _commit(state, rows, start, end, tokens, take)
        if state.tracer.enabled:
            state.tracer.record(block=block, step=step, rows=rows, fed_positions=list(range(xs.shape[1])),
                                committed=take.sum(1), keys=xs.shape[1])


def _cached_block(state: _State, rows: torch.Tensor, block: int, start: int, end: int, first_rule: str) -> None:
    cfg, model, args = state.config, state.model, state.model.args
    dev = state.x.device
    window = cfg.window if cfg.mode == "streaming" else None
    layout = fed_layout(state.x.shape[1], start, end, window)
    fed = layout.positions(dev)

    # Refresh: the (pruned) sequence in full, written into the generation's cache buffers; the keys/values of
    # positions before the block stay there as the block's prefix.
    xs = state.x[rows][:, fed]
    key_mask = None if state.key_mask is None else state.key_mask[rows][:, fed]
    buffers = state.cache_buffers()
    logits, cache = model(xs, state.pos[rows][:, fed], cache=None if buffers is None else buffers.empty_rows(len(rows)),
                          key_mask=key_mask, keep_prefix=start, max_position=state.last_position,
                          logits_index=_logits_index(start, end, 0, args.logits_shift, dev))
    _count(state, rows, fed=layout.length, keys=layout.length)
    tokens, conf = propose(logits, cfg.temperature, state.generator, model.args.mask_id)
    masked = xs[:, start:end] == args.mask_id
    take = commit_first(masked) if first_rule == "first_position" else commit_threshold(conf, masked, cfg.threshold)
    _commit(state, rows, start, end, tokens, take)
    if state.tracer.enabled:
        state.tracer.record(block=block, step=0, rows=rows, fed_positions=fed, position_ids=state.pos[rows[0]][fed],
                            committed=take.sum(1), threshold=[cfg.threshold] * len(rows), keys=layout.length)

    # Cached steps: every one feeds the same shapes (rows, block + window + trailing position) against the same
    # prefix, writing its keys/values after it in place. A row whose block is complete stays in the batch with
    # nothing to commit (the commit rules only take masked positions) until at least half the rows are done; then
    # the batch and the cache are compacted once. Sampling compacts as soon as a row is done, so the noise drawn
    # per step (one draw per row fed) stays the stream that earlier versions drew for the same seed.
    after = fed[start:]  # block + window + trailing position
    after_pos = state.pos[:, after]
    logits_idx = _logits_index(start, end, start, args.logits_shift, dev)
    key_mask = None
    if cache.key_mask is not None:
        key_mask = torch.cat([cache.key_mask, cache.key_mask.new_ones(len(rows), layout.after_prefix)], dim=1)
    step = 0
    while True:
        xs = state.x[rows[:, None], after]  # what this step feeds, read once
        masked_all = xs == args.mask_id
        pending = masked_all[:, : end - start].any(1)
        n_pending = int(pending.sum())  # the one sync per step the method needs: which rows still decode?
        if n_pending == 0:
            return
        if 2 * n_pending <= len(rows) or (cfg.temperature > 0 and n_pending < len(rows)):
            keep = pending.nonzero().squeeze(1)
            rows, cache, xs, masked_all = rows[keep], cache.select_rows(keep), xs[keep], masked_all[keep]
            pending, key_mask = pending[keep], None if key_mask is None else key_mask[keep]
        step += 1
        logits, _ = model(xs, after_pos[rows], cache=cache, key_mask=key_mask, logits_index=logits_idx,
                          max_position=state.last_position)
        _count(state, rows, fed=layout.after_prefix, keys=start + layout.after_prefix, pending=pending,
               n_pending=n_pending)
        tokens, conf = propose(logits, cfg.temperature, state.generator, model.args.mask_id)
        masked = masked_all[:, : end - start]
        # r: masked fraction of block + window + trailing position, measured before this step, per row.
        ratio = masked_all.float().mean(1)
        alpha = cfg.alpha if cfg.mode == "streaming" else 0.0
        tau = dynamic_threshold(cfg.threshold, alpha, ratio)
        take = commit_threshold(conf, masked, tau)
        _commit(state, rows, start, end, tokens, take)
        if state.tracer.enabled:
            live = pending.nonzero().squeeze(1)
            state.tracer.record(block=block, step=step, rows=rows[live], fed_positions=after,
                                position_ids=state.pos[rows[live[0]]][after], committed=take.sum(1)[live],
                                threshold=tau[live], keys=start + layout.after_prefix)


def _commit(state: _State, rows: torch.Tensor, start: int, end: int, tokens: torch.Tensor, take: torch.Tensor) -> None:
    block = state.x[rows, start:end]
    state.x[rows, start:end] = torch.where(take, tokens, block)


def _count(state: _State, rows: torch.Tensor, fed: int, keys: int, pending: torch.Tensor | None = None,
           n_pending: int = 0) -> None:
    """Count a forward over `rows`; given `pending` ((R,) bool, `n_pending` of it True), only the rows still
    decoding: a row kept in the batch after its block is complete takes no part in the method."""
    state.counters.add_forward(rows=rows.numel() if pending is None else n_pending, fed=fed, keys=keys)
    state.row_nfe[rows] += 1 if pending is None else pending


def _early_exit(state: _State, rows: torch.Tensor, end: int) -> None:
    """Rows whose just-completed block holds EOS: fill everything after the block with EOS and stop them."""
    eos = state.model.args.eos_id
    done = (state.x[rows, end - state.config.block_size : end] == eos).any(1)
    if bool(done.any()):
        finished = rows[done]
        state.x[finished, end:] = eos
        state.active[finished] = False


def _notify(state: _State, on_block: OnBlock, block: int, start: int, end: int) -> None:
    """Hand the committed block to `on_block`; rows it returns stop as after an early exit."""
    event = BlockEvent(index=block, start=start - state.prompt_len, tokens=state.x[:, start:end].cpu(),
                       active=tuple(state.active.tolist()))
    cancel = sorted({int(r) for r in on_block(event) or ()})
    if not cancel:
        return
    if cancel[0] < 0 or cancel[-1] >= state.x.shape[0]:
        raise ConfigError(f"on_block cancelled rows {cancel}; the batch has rows 0-{state.x.shape[0] - 1}")
    rows = torch.tensor(cancel, device=state.x.device)
    state.x[rows, end:] = state.model.args.eos_id
    state.active[rows] = False


def _count_generated(state: _State, tokens: torch.Tensor) -> None:
    args = state.model.args
    stop_ids = torch.tensor(sorted(args.answer_end_ids), device=tokens.device)
    is_stop = torch.isin(tokens, stop_ids)
    # Index of the first stop id per row (gen_length when none): tokens "up to EOS".
    first_stop = torch.where(is_stop.any(1), is_stop.int().argmax(1), tokens.shape[1])
    state.generated_per_row = first_stop.tolist()
    state.counters.generated_tokens = int(first_stop.sum())
    state.counters.non_eos_tokens = int((tokens != args.eos_id).sum())


def _tokenize(prompts: Sequence[Sequence[int]] | Sequence[str], tokenizer: Any) -> list[list[int]]:
    if isinstance(prompts, (str, bytes)):
        raise ConfigError("prompts must be a list (of strings or of token id lists), not a single string")
    out = []
    for p in prompts:
        if isinstance(p, str):
            if tokenizer is None:
                raise ConfigError("string prompts need a tokenizer")
            out.append(encode_prompt(tokenizer, p))  # raw text; templated prompts come as ids (encode_prompt)
        else:
            out.append([int(t) for t in p])
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
