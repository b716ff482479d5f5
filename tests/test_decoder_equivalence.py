"""The equivalences the Streaming-dLLM method promises, on tiny random-weight models (CPU, float32)."""

from __future__ import annotations

import pytest
import torch
from decoder_helpers import EOS, MASK, ScriptedLM, random_model

from decoder import DecodeConfig, generate
from decoder.pruning import fed_layout

PROMPTS = [[5, 9, 12, 7, 30, 22], [8, 3, 4], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]]


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_streaming_with_full_window_equals_fast(arch, threshold):
    """(1) window covering the whole suffix + static threshold + no early exit == Fast-dLLM, token for token."""
    model = random_model(arch, seed=1)
    fast = generate(model, PROMPTS[:1], DecodeConfig(mode="fast", gen_length=96, block_size=16, threshold=threshold))
    for window in (None, 80, 500):  # 80 = exactly the suffix after the first block
        stream = generate(model, PROMPTS[:1], DecodeConfig(mode="streaming", gen_length=96, block_size=16,
                                                           threshold=threshold, window=window, alpha=0.0,
                                                           early_exit=False))
        assert torch.equal(stream.tokens, fast.tokens)
        assert stream.counters.nfe == fast.counters.nfe
        assert stream.counters.attended_pairs == fast.counters.attended_pairs


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_prefix_cache_is_exact_at_refresh_and_approximate_after(arch):
    """(2) Cached logits equal recomputed ones when the prefix's keys were computed on the same sequence state
    (what the method assumes at the step after a refresh); once the block changes, the cached prefix keys are
    stale, which is the approximation Fast-dLLM accepts: the logits then differ from a full recompute."""
    model = random_model(arch, seed=2)
    total, start = 6 + 64, 6 + 16
    x = torch.full((1, total), MASK)
    x[0, :6] = torch.tensor(PROMPTS[0])
    x[0, 6:start] = torch.arange(10, 26)  # a decoded first block
    pos = torch.arange(total)
    full, cache = model(x, pos, keep_prefix=start)
    cached, _ = model(x[:, start:], pos[start:], cache=cache)
    torch.testing.assert_close(cached, full[:, start:], rtol=1e-5, atol=1e-5)

    # Commit a few tokens in the current block: the cache was computed while they were masks.
    x2 = x.clone()
    x2[0, start : start + 4] = torch.tensor([11, 12, 13, 14])
    recomputed, _ = model(x2, pos)
    stale, _ = model(x2[:, start:], pos[start:], cache=cache)
    assert not torch.allclose(stale, recomputed[:, start:], atol=1e-4)
    # ...but only through the stale prefix keys: refreshing the cache restores exactness.
    _, fresh = model(x2, pos, keep_prefix=start)
    exact, _ = model(x2[:, start:], pos[start:], cache=fresh)
    torch.testing.assert_close(exact, recomputed[:, start:], rtol=1e-5, atol=1e-5)


def test_a_cache_extended_in_two_calls_equals_one_built_at_once():
    """read + extend: caching [0, 10) then extending it with [10, 22) gives the cache of [0, 22) in one call."""
    model = random_model("dream", seed=8)
    x = torch.randint(3, 60, (2, 40))
    pos = torch.arange(40)
    key_mask = torch.ones(2, 40, dtype=torch.bool)
    key_mask[1, :3] = False  # a left-padded row
    _, whole = model(x, pos, key_mask=key_mask, keep_prefix=22)
    _, first = model(x[:, :10], pos[:10], key_mask=key_mask[:, :10], keep_prefix=10)
    _, extended = model(x[:, 10:], pos[10:], cache=first, key_mask=key_mask, keep_prefix=12)
    assert extended.length == whole.length == 22
    assert torch.equal(extended.key_mask, whole.key_mask)
    # Keys differ only by what each call attended to (the first call saw [0, 10) only): compare layer 0,
    # whose keys depend on the tokens alone.
    torch.testing.assert_close(extended.keys[0], whole.keys[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(extended.values[0], whole.values[0], rtol=1e-5, atol=1e-6)


def test_pruned_layout_keeps_true_positions_and_the_trailing_position():
    """(3) The pruned sequence is [0, block_end + w) plus the last position, each at its original position id."""
    layout = fed_layout(total_len=6 + 256, block_start=6, block_end=38, window=64)
    fed = layout.positions()
    assert fed.tolist() == list(range(38 + 64)) + [261]
    assert layout.after_prefix == 32 + 64 + 1
    # Window reaching the end: no separate trailing position.
    assert fed_layout(262, 198, 230, 64).positions().tolist() == list(range(262))
    assert fed_layout(262, 230, 262, 64).positions().tolist() == list(range(262))  # last block: no suffix


def test_pruned_position_ids_fed_to_the_model_are_the_original_ones():
    """(3) ...and generate() feeds exactly those ids, on the refresh and on cached steps, padding included."""
    model = random_model("llada", seed=3)
    cfg = DecodeConfig(mode="streaming", gen_length=128, block_size=16, window=32, threshold=0.9, alpha=0.5,
                       early_exit=False)
    result = generate(model, [PROMPTS[1], PROMPTS[0]], cfg, trace=True)
    plen = len(PROMPTS[0])
    total = plen + 128
    for step in result.trace:
        fed = step["fed_positions"]
        row = step["rows"][0]
        pad = plen - len([PROMPTS[1], PROMPTS[0]][row])
        assert step["position_ids"] == [max(p - pad, 0) for p in fed]  # left pads sit at 0, masked out
        block_end = plen + 16 * (step["block"] + 1)
        if total - block_end > 32:
            assert fed[-1] == total - 1 and fed[-2] == block_end + 31
    assert any(s["step"] > 0 for s in result.trace)


@pytest.mark.parametrize("arch", ["llada", "dream"])
@pytest.mark.parametrize(
    "cfg",
    [
        DecodeConfig(mode="vanilla", gen_length=64, block_size=16, steps=32),
        DecodeConfig(mode="fast", gen_length=64, block_size=16, threshold=0.5),
        DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=16, threshold=0.7, alpha=0.5),
    ],
    ids=["vanilla", "fast", "streaming"],
)
def test_batch_of_n_equals_n_single_runs(arch, cfg):
    """(4) Left-padded batch rows decode exactly as they do alone."""
    model = random_model(arch, seed=4)
    batch = generate(model, PROMPTS, cfg)
    nfe = 0
    for i, prompt in enumerate(PROMPTS):
        single = generate(model, [prompt], cfg)
        assert torch.equal(batch.tokens[i], single.tokens[0]), f"row {i}"
        assert batch.row_nfe[i] == single.counters.nfe
        nfe += single.counters.nfe
    assert batch.counters.row_forwards == nfe


def test_vanilla_with_one_block_and_gen_length_steps_unmasks_one_token_per_step():
    """(5) block = gen length and steps = gen length: exactly one token per forward, gen_length forwards."""
    model = random_model("llada", seed=5)
    result = generate(model, PROMPTS[:2], DecodeConfig(mode="vanilla", gen_length=48, block_size=48, steps=48),
                      trace=True)
    assert len(result.trace) == 48 == result.counters.nfe
    assert all(step["committed"] == [1, 1] for step in result.trace)
    assert not (result.tokens == MASK).any()


def test_vanilla_quota_spreads_the_remainder_over_the_first_steps():
    model = random_model("llada", seed=5)
    result = generate(model, PROMPTS[:1], DecodeConfig(mode="vanilla", gen_length=20, block_size=10, steps=6),
                      trace=True)
    assert [s["committed"][0] for s in result.trace] == [4, 3, 3, 4, 3, 3]


def test_threshold_commits_every_confident_token_and_at_least_one():
    """Fast-dLLM's rule on an oracle: tokens at or above the threshold all land in the first step; below it,
    one token (the most confident) per step."""
    conf = {q: (0.95 if q % 2 else 0.2) for q in range(200)}
    model = ScriptedLM(target=lambda q: 3 + q % 40, confidence=lambda q: conf[q])
    result = generate(model, [[5, 6, 7, 8]], DecodeConfig(mode="fast", gen_length=16, block_size=16,
                                                         threshold=0.9), trace=True)
    committed = [s["committed"][0] for s in result.trace]
    assert committed[0] == 8 + (0 if 8 else 1)  # the 8 odd positions (>= 0.9); the argmax is among them
    assert committed[1:] == [1] * 8
    assert result.tokens[0].tolist() == [3 + q % 40 for q in range(4, 20)]


def test_dynamic_threshold_relaxes_as_the_fed_region_fills():
    """tau = tau0 (1 - alpha (1 - r)), r measured over block + window + trailing position before the step."""
    model = ScriptedLM(target=lambda q: 3 + q % 40, confidence=lambda q: 0.5)
    cfg = DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=16, threshold=0.9, alpha=0.5,
                       early_exit=False)
    result = generate(model, [[5, 6, 7, 8]], cfg, trace=True)
    first_block = [s for s in result.trace if s["block"] == 0]
    assert first_block[0]["threshold"] == [0.9]
    fed_after = 16 + 16 + 1
    for k, step in enumerate(first_block[1:], start=1):
        masked = (16 - k) + 16 + 1  # one token committed per step (all confidences 0.5 < tau)
        assert step["threshold"][0] == pytest.approx(0.9 * (1 - 0.5 * (1 - masked / fed_after)))


def test_early_exit_is_per_row_and_fills_eos():
    """A row whose completed block holds EOS stops there; the other rows go on, and NFE shows it."""
    # EOS from position id 20 on: row A (prompt 4) sees EOS in its 2nd block, row B (prompt 12) in its 1st.
    model = ScriptedLM(target=lambda q: EOS if q >= 20 else 3 + q % 40, confidence=lambda q: 0.99)
    cfg = DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=16, threshold=0.9, alpha=0.3)
    short, long = [10, 11, 12, 13], list(range(10, 22))
    result = generate(model, [short, long], cfg)
    assert result.row_nfe == [2, 1]  # every token is confident: one forward per block until the exit
    assert (result.tokens[0, 16:] == EOS).all() and (result.tokens[1, 8:] == EOS).all()
    assert result.generated_per_row == [16, 8]
    no_exit = generate(model, [short, long], DecodeConfig(mode="fast", gen_length=64, block_size=16))
    assert no_exit.row_nfe == [4, 4]
    assert torch.equal(no_exit.tokens, result.tokens)


def test_dream_first_step_commits_exactly_the_first_block_position():
    model = random_model("dream", seed=6)
    result = generate(model, PROMPTS[:1], DecodeConfig(mode="fast", gen_length=32, block_size=16, threshold=0.0),
                      trace=True)
    refresh = [s for s in result.trace if s["step"] == 0]
    assert all(s["committed"] == [1] for s in refresh)
    # threshold 0 commits the rest of the block in one cached step.
    assert result.counters.nfe == 4


def test_sampling_is_reproducible_with_a_seed_and_varies_without():
    model = random_model("llada", seed=7, std=0.1)
    cfg = DecodeConfig(mode="fast", gen_length=32, block_size=16, temperature=1.0, seed=123)
    a, b = generate(model, PROMPTS[:1], cfg), generate(model, PROMPTS[:1], cfg)
    assert torch.equal(a.tokens, b.tokens)
    c = generate(model, PROMPTS[:1], DecodeConfig(mode="fast", gen_length=32, block_size=16, temperature=1.0,
                                                  seed=124))
    assert not torch.equal(a.tokens, c.tokens)


def test_a_known_position_bound_sizes_rope_without_changing_logits():
    """max_position (the caller's bound, so the forward needn't read the ids back from the device) grows the RoPE
    tables past the initial 8192 positions exactly as reading the ids would, and the logits stay the same."""
    model = random_model("llada", seed=5, max_seq_len=10_000)
    ids, pos = torch.tensor([[5, 9, 12]]), torch.tensor([9000, 9001, 9002])
    read, _ = model(ids, pos)
    grown = model.rope_cos.shape[0]
    model = random_model("llada", seed=5, max_seq_len=10_000)
    bounded, _ = model(ids, pos, max_position=9002)
    assert model.rope_cos.shape[0] == grown > 9002
    assert torch.equal(read, bounded)


@pytest.mark.parametrize("cfg", [DecodeConfig(mode="vanilla", gen_length=32, block_size=16, steps=8),
                                 DecodeConfig(mode="fast", gen_length=32, block_size=16, threshold=0.7),
                                 DecodeConfig(mode="streaming", gen_length=32, block_size=16, window=16)],
                         ids=["vanilla", "fast", "streaming"])
def test_generate_gives_every_forward_its_position_bound(cfg, monkeypatch):
    """No forward of the decode loop syncs the device to size RoPE: generate passes the sequence's last position."""
    model = random_model("llada", seed=6)
    bounds = []
    forward = model.forward

    def recording(*args, **kwargs):
        bounds.append(kwargs.get("max_position"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", recording)
    generate(model, PROMPTS, cfg)
    assert bounds and set(bounds) == {len(PROMPTS[2]) + 32 - 1}
