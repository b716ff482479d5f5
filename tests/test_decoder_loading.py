"""Checkpoint loading: Hugging Face layout round-trip, real parameter names, and clear failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from decoder_helpers import random_model
from safetensors import safe_open
from torch.utils._python_dispatch import TorchDispatchMode

from decoder import ModelLoadError, load_model, save_checkpoint
from decoder.architectures import PRESETS, args_from_config


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(64)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="w1", pad_token="w1", mask_token="w63")


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_sharded_round_trip_gives_identical_logits(tmp_path, arch):
    model = random_model(arch, seed=11, std=0.1)
    out = save_checkpoint(model, tmp_path / arch, tokenizer=_tokenizer(), max_shard_bytes=60_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1, "the test must exercise sharded loading"
    names = set(index["weight_map"])
    if arch == "llada":
        assert {"model.transformer.wte.weight", "model.transformer.blocks.0.q_proj.weight",
                "model.transformer.blocks.1.ff_out.weight", "model.transformer.ff_out.weight",
                "model.transformer.ln_f.weight"} <= names
    else:
        assert {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.bias",
                "model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"} <= names
    with safe_open(str(out / shards[0]), framework="pt") as st:
        assert set(st.keys()) <= names

    loaded, tokenizer = load_model(out, device="cpu")
    assert loaded.args == model.args
    assert tokenizer.decode([5, 6]) == "w5 w6"
    ids = torch.tensor([[3, 4, 5, 63, 63, 63]])
    pos = torch.arange(6)
    torch.testing.assert_close(loaded(ids, pos)[0], model(ids, pos)[0], rtol=0, atol=0)
    assert loaded.source["fingerprint"] and loaded.source["path"] == str(out)


def test_single_file_checkpoint_and_bf16(tmp_path):
    model = random_model("llada", seed=12, std=0.1)
    out = save_checkpoint(model, tmp_path / "single", tokenizer=_tokenizer())
    assert (out / "model.safetensors").exists()
    loaded, _ = load_model(out, device="cpu", dtype="bfloat16", with_tokenizer=False)
    assert loaded.dtype == torch.bfloat16
    ids = torch.tensor([[3, 4, 5, 63]])
    torch.testing.assert_close(loaded(ids, torch.arange(4))[0].float(), model(ids, torch.arange(4))[0],
                               rtol=0.05, atol=0.05)


def test_presets_have_the_real_checkpoints_shapes():
    llada = args_from_config(PRESETS["llada-8b"])
    assert (llada.dim, llada.n_layers, llada.n_heads, llada.ffn_dim, llada.vocab_size) == (4096, 32, 32, 12288, 126464)
    assert (llada.mask_id, llada.eos_id) == (126336, 126081) and 126348 in llada.stop_ids
    dream = args_from_config(PRESETS["dream-7b"])
    assert (dream.dim, dream.n_layers, dream.n_kv_heads, dream.ffn_dim, dream.vocab_size) == (3584, 28, 4, 18944, 152064)
    assert dream.logits_shift and dream.qkv_bias and dream.mask_id == 151666


def test_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path, device="cpu")
    (tmp_path / "config.json").write_text(json.dumps(PRESETS["llada-8b"]))
    with pytest.raises(ModelLoadError, match="no safetensors"):
        load_model(tmp_path, device="cpu")


def test_missing_shard_and_mismatched_weights(tmp_path):
    model = random_model("llada", seed=13)
    out = save_checkpoint(model, tmp_path / "m", max_shard_bytes=60_000)
    shard = sorted(out.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(ModelLoadError, match="lacks shard"):
        load_model(out, device="cpu", with_tokenizer=False)
    other = save_checkpoint(random_model("llada", seed=13, dim=32), tmp_path / "other")
    (other / "config.json").write_text((out / "config.json").read_text())
    with pytest.raises(ModelLoadError, match="shape"):
        load_model(other, device="cpu", with_tokenizer=False)


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelLoadError, match="unknown architecture"):
        load_model(tmp_path, device="cpu")


def test_unreachable_hub_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="could not fetch 'GSAI-ML/LLaDA-8B-Instruct' from the Hugging Face hub"):
        load_model("GSAI-ML/LLaDA-8B-Instruct", device="cpu")


def test_a_path_that_is_neither_dir_nor_hub_id():
    with pytest.raises(ModelLoadError, match="neither a checkpoint directory nor a hub id"):
        load_model("./no/such/dir", device="cpu")


class _Allocations(TorchDispatchMode):
    """Records (shape, dtype) of every real (non-meta) tensor an allocation op creates."""

    def __init__(self):
        super().__init__()
        self.made: list[tuple[tuple[int, ...], torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in ("empty", "empty_like", "empty_strided", "new_empty", "_to_copy") \
                and isinstance(out, torch.Tensor) and out.device.type != "meta" and out.is_floating_point():
            self.made.append((tuple(out.shape), out.dtype))
        return out


@pytest.mark.parametrize("source", ["bundled", "local"])
def test_parameters_are_allocated_in_the_target_dtype(source, tmp_path):
    """bf16 straight to the device: no parameter is ever materialised in float32 first (an 8B model would peak at
    32 GB of float32 on the GPU before its cast to 16 GB of bf16)."""
    if source == "bundled":
        where = "dtune/tiny-arith"
    else:
        where = save_checkpoint(random_model("dream", seed=14, std=0.1), tmp_path / "ckpt", dtype=torch.bfloat16)
    with _Allocations() as allocations:
        model, _ = load_model(where, device="cpu", dtype="bfloat16", with_tokenizer=False)
    shapes = {tuple(p.shape) for p in model.parameters()}
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    on_device = [(shape, dtype) for shape, dtype in allocations.made if shape in shapes]
    assert on_device, "no parameter allocation was seen"
    assert {dtype for _, dtype in on_device} == {torch.bfloat16}, sorted({str(d) for _, d in on_device})


def test_loading_a_checkpoint_does_not_import_the_compiler_stack():
    """A model about to receive its weights is built with no initialisers, no RoPE tables and no empty_like on the
    meta device: torch's reference kernels there import torch._dynamo and torch.fx (~2-3 CPU-s of every command
    that loads a model)."""
    code = ("import sys; from decoder import load_model; load_model('dtune/tiny-arith', device='cpu'); "
            "print(any(m in sys.modules for m in ('torch._dynamo', 'torch.fx.experimental.symbolic_shapes')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
