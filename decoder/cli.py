"""`python -m decoder generate`: decode one prompt with a profile or explicit knobs and print the counters."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from .config import MODES, DecodeConfig
from .errors import DecoderError

EXIT_ERROR = 2


def window_arg(text: str) -> int | None:
    """`--window 64`, or `none`/`full` for no pruning."""
    if text.lower() in {"none", "full"}:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"window must be an integer or 'none', got {text!r}") from None


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """The DecodeConfig knobs as options; unset ones leave the profile's (or the mode's) value alone."""
    g = parser.add_argument_group("decode knobs (override the profile's values)")
    g.add_argument("--mode", choices=MODES)
    g.add_argument("--gen-length", type=int)
    g.add_argument("--block-size", type=int)
    g.add_argument("--steps", type=int, help="vanilla: total denoising steps")
    g.add_argument("--threshold", "--tau0", dest="threshold", type=float, help="fast/streaming acceptance threshold")
    g.add_argument("--window", type=window_arg, default=argparse.SUPPRESS, help="streaming window; 'none' = no pruning")
    g.add_argument("--alpha", type=float, help="streaming dynamic-threshold strength")
    g.add_argument("--early-exit", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--temperature", type=float)
    g.add_argument("--seed", type=int)


def knobs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(DecodeConfig)}
    knobs = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if "window" in vars(args):  # None is a real value here ("no pruning"), so it is suppressed when unset
        knobs["window"] = args.window
    return knobs


def build_config(profile: str | None, knobs: dict[str, Any]) -> DecodeConfig:
    """A profile's config with knobs laid over it, or the knobs alone (mode defaults fill the rest)."""
    from .profile import load_profile

    if profile:
        base = load_profile(profile).to_dict()
        if "mode" in knobs and knobs["mode"] != base["mode"]:
            base = {k: v for k, v in base.items() if k in {"gen_length", "block_size", "temperature", "seed"}}
        return DecodeConfig.from_dict({**base, **knobs})
    return DecodeConfig.from_dict(knobs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m decoder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="decode one prompt and print the completion and the cost counters")
    gen.add_argument("--model", required=True, help="checkpoint dir, bundled name (dtune/tiny-arith) or hub id")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--profile", help="a profile JSON exported by the tuner")
    gen.add_argument("--chat-template", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    gen.add_argument("--device")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    add_knob_arguments(gen)
    args = parser.parse_args(argv)
    try:
        return _generate(args)
    except DecoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .loading import load_model

    config = build_config(args.profile, knobs_from_args(args))
    model, tokenizer = load_model(args.model, device=args.device, dtype=args.dtype)
    text = args.prompt
    if args.chat_template:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
    result = generate(model, [text], config, tokenizer=tokenizer)
    counters = result.counters.to_dict()
    if args.json:
        print(json.dumps({"completion": result.texts[0], "counters": counters, "config": config.to_dict(),
                          "model": model.source}))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(result.texts[0], markup=False, highlight=False)
    table = Table(title=f"{config.mode} decoding", show_header=True)
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in counters.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    return 0
