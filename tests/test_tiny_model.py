"""The shipped ``dtune/tiny-arith`` checkpoint: loads like a real one and solves ``arith`` as its card says.

The sample accuracy asserted here is the one recorded in ``decoder/bundled/tiny-arith/eval_results.json``: the
card's streaming row (the paper's setting) on the first 200 test problems, a larger sample than vanilla's cost
allows here (greedy decoding is deterministic; a tolerance of one problem absorbs float differences across CPUs,
torch builds and batch compositions).
"""

from __future__ import annotations

import json

import pytest
import torch

from decoder import DecodeConfig, generate, load_model
from decoder.loading import BUNDLED_MODELS
from tuner.tasks import get_task

BUNDLED = BUNDLED_MODELS["dtune/tiny-arith"]
RESULTS = json.loads((BUNDLED / "eval_results.json").read_text())


@pytest.fixture(scope="module")
def loaded():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    return load_model("dtune/tiny-arith", device="cpu")


def test_checkpoint_is_small_and_complete():
    names = {p.name for p in BUNDLED.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= names
    assert sum(p.stat().st_size for p in BUNDLED.iterdir()) < 20 * 2**20


def test_loads_through_the_real_checkpoint_path(loaded):
    model, tok = loaded
    args = model.args
    assert args.arch == "llada" and not args.logits_shift
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 5e6
    assert args.mask_id == tok.mask_token_id and args.eos_id == tok.eos_token_id == args.pad_id
    assert args.vocab_size == len(tok) and args.max_seq_len >= 1280
    assert model.source["id"] == "dtune/tiny-arith" and len(model.source["fingerprint"]) == 16
    text = "Question: Tom has 12 apples.\nAnswer: 12 + 3 = 15."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert get_task("arith").default_model == "dtune/tiny-arith"


@pytest.mark.slow
def test_reaches_its_stated_accuracy_on_a_fixed_sample(loaded):
    model, tok = loaded
    sample = RESULTS["test_sample"]
    task = get_task("arith")
    items = task.load("test")[: sample["n"]]
    config = DecodeConfig.from_dict(sample["config"])
    out = generate(model, [task.prompt(it) for it in items], config, tokenizer=tok)
    correct = sum(task.score(it, text).correct for it, text in zip(items, out.texts, strict=True))
    assert correct >= sample["correct"] - 1, (correct, sample)
    # The answers end in EOS padding, as LLaDA-Instruct's do: every row stops well before gen_length.
    assert max(out.generated_per_row) < config.gen_length
