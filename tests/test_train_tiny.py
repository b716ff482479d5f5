"""``tuner.train_tiny``: tokenizer, batches, the masked-diffusion masks, and a short training from scratch."""

from __future__ import annotations

import itertools
import random

import torch

from decoder import load_model
from tools.train_tiny import (
    TrainConfig,
    answer_length,
    build_tokenizer,
    diffusion_masks,
    encode_rows,
    make_batch,
    train,
)
from tuner.tasks.arith import format_prompt, train_stream

SMALL = dict(dim=64, n_layers=2, n_heads=4, ffn_dim=128, batch_size=16, lr=3e-3, warmup=5, eval_size=0,
             short_phase=1.0, max_seq_len=512)


def test_tokenizer_round_trips_and_splits_digits():
    tok = build_tokenizer()
    assert 256 < len(tok) < 600
    rec = next(train_stream(5))
    text = format_prompt(rec["question"]) + " " + rec["answer"]
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    pieces = tok.convert_ids_to_tokens(tok(" 47 + 5 = 52.")["input_ids"])
    assert pieces == ["Ġ4", "7", "Ġ+", "Ġ5", "Ġ=", "Ġ5", "2", "."]
    assert tok.eos_token == tok.pad_token == "<|endoftext|>" and tok.mask_token == "<|mdm_mask|>"


def test_batches_pad_like_the_decoder_and_masks_spare_the_prompt():
    tok = build_tokenizer()
    rows = encode_rows(list(itertools.islice(train_stream(0), 8)), tok)
    batch = make_batch(rows, 64, tok.eos_token_id)
    plen = batch.prompt_len
    for r, (p, a) in enumerate(rows):
        assert batch.x[r, plen - len(p) : plen].tolist() == p
        assert batch.x[r, plen : plen + len(a)].tolist() == a
        assert (batch.x[r, plen + len(a) :] == tok.eos_token_id).all()
        assert batch.pos[r, plen - len(p)] == 0
    gen = torch.Generator().manual_seed(0)
    masked, weight = diffusion_masks(batch, semi_ar=0.0, gen=gen)
    assert masked.shape == (8, 64) and (weight[~masked] == 0).all() and (weight[masked] > 0).all()
    masked, weight = diffusion_masks(batch, semi_ar=1.0, gen=gen)
    for r in range(8):  # semi-AR rows: clean prefix, a partly masked block that carries the loss, then all masked
        scored = weight[r].nonzero().flatten()
        if scored.numel() == 0:
            continue
        lo, hi = int(scored.min()), int(scored.max())
        assert hi - lo < 64 and not masked[r, :lo].any() and masked[r, lo + 64 :].all()


def test_answer_length_curriculum():
    cfg = TrainConfig(steps=100, short_phase=0.5)
    rng = random.Random(0)
    assert all(41 <= answer_length(s, cfg, rng, 40) <= 64 for s in range(50))
    late = [answer_length(s, cfg, rng, 40) for s in range(50, 100) for _ in range(10)]
    assert max(late) >= 128 and min(late) <= 64


def test_training_from_scratch_lowers_the_loss_and_is_deterministic(tmp_path):
    cfg = TrainConfig(steps=40, seed=3, **SMALL)
    hist = train(cfg, tmp_path / "model", progress=False)
    losses = hist["losses"]
    assert len(losses) == 40 and all(map(torch.isfinite, torch.tensor(losses)))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.75 * first, (first, last)
    again = train(TrainConfig(steps=5, seed=3, **SMALL), None, progress=False)
    twice = train(TrainConfig(steps=5, seed=3, **SMALL), None, progress=False)
    assert twice["losses"] == again["losses"]
    model, tok = load_model(tmp_path / "model", device="cpu")
    assert model.args.arch == "llada" and model.args.mask_id == tok.mask_token_id
    assert model.args.eos_id == tok.eos_token_id and model.args.vocab_size == len(tok)
