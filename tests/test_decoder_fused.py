"""The fused path (`DiffusionLM.fuse`, `load_model(compile=True)`) decodes the same tokens as the eager one."""

from __future__ import annotations

import pytest
import torch
from decoder_helpers import random_model
from torch.utils._python_dispatch import TorchDispatchMode

from decoder import DecodeConfig, build_random_model, generate, load_model
from decoder.model import ModelArgs
from tuner.tasks import get_task

MODES = {
    "vanilla": DecodeConfig(mode="vanilla", gen_length=128, block_size=32, steps=32),
    "fast": DecodeConfig(mode="fast", gen_length=128, block_size=32, threshold=0.9),
    "streaming": DecodeConfig(mode="streaming", gen_length=128, block_size=32, window=32, threshold=0.9, alpha=0.3),
}


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    eager, tok = load_model("dtune/tiny-arith", device="cpu")
    fused, _ = load_model("dtune/tiny-arith", device="cpu", compile=True, with_tokenizer=False)
    task = get_task("arith")
    prompts = [task.prompt(item) for item in task.load("test")[:24]]
    return eager, fused, tok, prompts


def test_compile_switches_the_bundled_model_to_the_fused_path(tiny):
    eager, fused, _, _ = tiny
    assert fused.is_fused and not eager.is_fused
    assert not fused.compiled  # torch.compile only on CUDA
    # the fused weights are the parameters themselves (views), not copies
    attn = fused.layers[0].attn
    assert attn.wq.weight.data_ptr() == attn.wqkv.data_ptr()
    for (name, p), (_, q) in zip(fused.named_parameters(), eager.named_parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("mode", MODES)
def test_fused_and_eager_give_identical_tokens_on_arith(tiny, mode):
    eager, fused, tok, prompts = tiny
    for batch in (prompts[:12], prompts[12:]):  # left-padded batches
        a = generate(eager, batch, MODES[mode], tokenizer=tok)
        b = generate(fused, batch, MODES[mode], tokenizer=tok)
        assert torch.equal(a.tokens, b.tokens)
        assert a.row_nfe == b.row_nfe


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_fused_logits_match_eager_and_the_cache_is_written_in_place(arch):
    """Random weights (Dream: GQA and QKV bias), a padded batch, a refresh then two cached steps."""
    eager, fused = random_model(arch, seed=9, std=0.1), random_model(arch, seed=9, std=0.1).fuse()
    x = torch.randint(3, 60, (2, 40))
    pos = torch.arange(40)
    key_mask = torch.ones(2, 40, dtype=torch.bool)
    key_mask[1, :3] = False
    outs = []
    for model in (eager, fused):
        full, cache = model(x, pos, key_mask=key_mask, keep_prefix=24)
        buffers = [k.data_ptr() for k in cache.k_buf]
        step1, _ = model(x[:, 24:], pos[24:], cache=cache, key_mask=key_mask)
        step2, _ = model(x[:, 24:], pos[24:], cache=cache, key_mask=key_mask)
        assert [k.data_ptr() for k in cache.k_buf] == buffers  # no new cache tensors per step
        torch.testing.assert_close(step1, step2, rtol=0, atol=0)
        outs.append((full, step1))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-5, atol=1e-5)


def test_build_random_model_takes_the_switch_and_bf16_runs():
    args = ModelArgs(arch="llada", vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=128,
                     max_seq_len=256, mask_id=63, eos_id=1, stop_ids=(1,), pad_id=1)
    model = build_random_model(args, dtype=torch.bfloat16, compile=True, std=0.5)
    assert model.is_fused and model.dtype == torch.bfloat16
    cfg = DecodeConfig(mode="streaming", gen_length=64, block_size=32, window=16, threshold=0.9, alpha=0.3)
    out = generate(model, [[5, 6, 7], [8]], cfg)
    assert out.tokens.shape == (2, 64)


def test_fuse_false_goes_back_to_the_eager_path_exactly():
    eager, model = random_model("dream", seed=10, std=0.1), random_model("dream", seed=10, std=0.1)
    x, pos = torch.randint(3, 60, (2, 12)), torch.arange(12)
    model.fuse()
    model.fuse(False)
    assert not model.is_fused and not any(layer.is_fused for layer in model.layers)
    assert torch.equal(model(x, pos)[0], eager(x, pos)[0])


class _Cats(TorchDispatchMode):
    """Counts torch.cat along the sequence axis of 4-D tensors (a KV cache grown by concatenation)."""

    def __init__(self):
        super().__init__()
        self.kv_cats = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ == "cat" and args[0][0].dim() == 4:
            dim = args[1] if len(args) > 1 else (kwargs or {}).get("dim", 0)
            self.kv_cats += dim % 4 == 2
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("fused", [False, True])
def test_generate_allocates_one_cache_and_never_concatenates_it(fused, monkeypatch):
    model = random_model("dream", seed=4)
    if fused:
        model.fuse()
    made = []
    new_cache = model.new_cache
    monkeypatch.setattr(model, "new_cache", lambda *a: made.append(a) or new_cache(*a))
    cfg = DecodeConfig(mode="streaming", gen_length=64, block_size=16, window=16, threshold=0.7, alpha=0.5,
                       early_exit=False)
    with _Cats() as cats:
        out = generate(model, [[5, 9, 12], [8, 3, 4, 7, 30]], cfg)
    assert out.counters.nfe > 4  # cached steps ran
    assert made == [(2, 5 + 64)] and cats.kv_cats == 0
