"""DecodeConfig validation, the profile file format, and `python -m decoder generate`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from decoder_helpers import random_model

from decoder import (
    ConfigError,
    DecodeConfig,
    ProfileError,
    load_profile,
    read_profile,
    save_checkpoint,
    save_profile,
)
from decoder.cli import main


def test_mode_defaults():
    assert DecodeConfig(mode="streaming").window == 128 and DecodeConfig(mode="streaming").early_exit is True
    fast = DecodeConfig(mode="fast")
    assert fast.window is None and fast.alpha == 0.0 and fast.early_exit is False
    vanilla = DecodeConfig(mode="vanilla", gen_length=64, block_size=32)
    assert vanilla.steps == 64 and vanilla.window is None


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({"mode": "beam"}, "mode must be one of"),
        ({"gen_length": 100, "block_size": 32}, "multiple of block_size"),
        ({"threshold": 1.5}, r"threshold must be in \[0.0, 1.0\]"),
        ({"threshold": "high"}, "threshold must be a number"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"window": 0}, "window must be >= 1"),
        ({"window": 12.5}, "window must be an integer"),
        ({"mode": "vanilla", "gen_length": 64, "block_size": 16, "steps": 6}, "multiple of the number of blocks"),
        ({"mode": "vanilla", "window": 32}, "streaming mode only"),
        ({"mode": "fast", "steps": 8}, "vanilla mode only"),
        ({"mode": "fast", "alpha": 0.3}, "fixed threshold"),
        ({"mode": "fast", "window": 32}, "feeds the whole suffix"),
        ({"early_exit": "yes"}, "early_exit must be a bool"),
        ({"gen_length": True}, "gen_length must be an integer"),
    ],
)
def test_invalid_configs_name_the_knob(knobs, message):
    with pytest.raises(ConfigError, match=message):
        DecodeConfig.from_dict(knobs)


def test_unknown_knob():
    with pytest.raises(ConfigError, match="unknown decode knob"):
        DecodeConfig.from_dict({"windw": 32})


def test_profile_round_trip_is_a_generation_config(tmp_path):
    cfg = DecodeConfig(mode="streaming", gen_length=256, block_size=32, window=96, threshold=0.85, alpha=0.4)
    path = save_profile(tmp_path / "p.json", cfg, meta={"task": {"name": "gsm8k"}, "metrics": {"accuracy": 0.8}})
    assert load_profile(path) == cfg
    assert read_profile(path).meta["task"]["name"] == "gsm8k"
    from transformers import GenerationConfig

    gc = GenerationConfig.from_pretrained(str(tmp_path), config_file_name="p.json")
    assert gc.max_new_tokens == 256
    assert not list(tmp_path.glob(".p.json.*"))  # atomic write leaves no temp file


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"max_new_tokens": 3}), "not a dtune profile"),
        (json.dumps({"dtune": {"format": "dtune-profile", "format_version": 99, "decode": {}}}), "upgrade dtune"),
        (json.dumps({"dtune": {"format": "dtune-profile", "format_version": 1, "decode": {"alpha": 7}}}),
         "invalid decode settings"),
        (json.dumps({"dtune": {"format": "dtune-profile", "format_version": 1}}), "no 'decode'"),
    ],
)
def test_corrupt_profiles_are_profile_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ProfileError, match=message):
        load_profile(path)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(tmp_path / "missing.json")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from test_decoder_loading import _tokenizer

    return save_checkpoint(random_model("llada", seed=21), tmp_path_factory.mktemp("ckpt"), tokenizer=_tokenizer())


def test_cli_generate_json_with_knobs(checkpoint, capsys):
    rc = main(["generate", "--model", str(checkpoint), "--prompt", "w5 w6 w7", "--mode", "streaming",
               "--gen-length", "64", "--block-size", "16", "--window", "16", "--alpha", "0.5", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["window"] == 16 and out["config"]["alpha"] == 0.5
    assert out["counters"]["nfe"] >= 4 and out["counters"]["tokens_per_s"] > 0
    assert isinstance(out["completion"], str)


def test_cli_profile_with_override_and_window_none(checkpoint, tmp_path, capsys):
    profile = save_profile(tmp_path / "p.json", DecodeConfig(mode="streaming", gen_length=64, block_size=16,
                                                             window=16))
    assert main(["generate", "--model", str(checkpoint), "--prompt", "w5", "--profile", str(profile),
                 "--window", "none", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["window"] is None and out["config"]["gen_length"] == 64


def test_cli_errors_are_one_line_and_nonzero(checkpoint, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    for extra in (["--profile", str(bad)], ["--threshold", "2"]):
        proc = subprocess.run([sys.executable, "-m", "decoder", "generate", "--model", str(checkpoint), "--prompt",
                               "w5", *extra], capture_output=True, text=True)
        assert proc.returncode == 2
        assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "decoder", "generate", "--model", str(tmp_path / "nope"),
                           "--prompt", "x"], capture_output=True, text=True)
    assert proc.returncode == 2 and "error:" in proc.stderr


def test_the_cli_and_the_tuner_encode_a_templated_prompt_to_the_same_ids(tmp_path, capsys):
    """One prompt encoder (decoder.encode_prompt): `decoder generate --chat-template` decodes the ids the tuner's
    evaluator measured, never the templated text tokenised a second time with the tokenizer's special tokens."""
    from tokenizers.processors import TemplateProcessing

    from decoder import encode_prompt, load_model, save_checkpoint
    from tuner.study.evaluate import Evaluator
    from tuner.tasks import get_task

    model, tokenizer = load_model("dtune/tiny-arith", device="cpu")
    # A tokenizer that adds a BOS-like token by default, and a template that already holds one (as LLaDA's do).
    bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokenizer._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                             special_tokens=[("<|endoftext|>", bos)])
    tokenizer.chat_template = "<|endoftext|>{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}Assistant:"
    local = save_checkpoint(model, tmp_path / "templated", tokenizer=tokenizer)
    task = get_task("arith", validation_size=1)
    item = task.load("validation")[0]
    evaluator = Evaluator(*load_model(str(local), device="cpu"), task, chat_template=True)
    ids = evaluator.prompt_ids(item)
    assert ids == encode_prompt(evaluator.tokenizer, task.prompt(item), chat_template=True)
    assert ids.count(bos) == 1 and evaluator.tokenizer("x")["input_ids"][0] == bos  # the default would add a second
    assert main(["generate", "--model", str(local), "--prompt", task.prompt(item), "--chat-template", "--json",
                 "--gen-length", "32", "--block-size", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["prompt_tokens"] == len(ids)
