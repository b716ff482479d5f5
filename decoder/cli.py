"""`python -m decoder generate`: decode one prompt with a profile or explicit knobs and print the counters;
`python -m decoder serve`: serve a profile over HTTP (decoder.serving)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .config import KNOBS, MODES, DecodeConfig
from .errors import DecoderError, ServeError

EXIT_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit 2, like every other bad input: argparse's
    default prints the whole usage block first, which buries the one line that says what is wrong."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def bounded_int(low: int) -> Any:
    """An argparse type: an integer >= `low` (a negative --limit would slice from the end, a negative index is no
    seed)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


positive_int = bounded_int(1)
non_negative_int = bounded_int(0)


def optional_int(text: str) -> int | None:
    """An integer, or `none`/`full` for None (window: no pruning; steps: the mode's default; seed: unseeded)."""
    if text.lower() in {"none", "full"}:
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {text!r}") from None


_ARG_TYPES = {"int": int, "float": float}


def add_knob_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per DecodeConfig knob (decoder.config.KNOBS); unset ones leave the profile's (or the mode's)
    value alone. An optional knob (None is a value of its own) is suppressed when unset."""
    g = parser.add_argument_group("decode knobs (override the profile's values)")
    for knob in KNOBS.values():
        flags = knob.flags or (knob.option,)
        if knob.kind == "mode":
            g.add_argument(*flags, dest=knob.name, choices=MODES, help=knob.help)
        elif knob.kind == "bool":
            g.add_argument(*flags, dest=knob.name, action=argparse.BooleanOptionalAction, default=None,
                           help=knob.help)
        elif knob.optional:
            g.add_argument(*flags, dest=knob.name, type=optional_int, default=argparse.SUPPRESS, help=knob.help)
        else:
            g.add_argument(*flags, dest=knob.name, type=_ARG_TYPES[knob.kind], help=knob.help)


def knobs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs given on the command line (those of `add_knob_arguments`), by name; unset ones left out."""
    given = vars(args)
    # An optional knob's None is a real value ("no pruning"), so its option is suppressed when unset: present
    # means given. Other knobs default to None = not given.
    return {k: v for k, v in given.items() if k in KNOBS and (v is not None or KNOBS[k].optional)}


def build_config(profile: str | None, knobs: dict[str, Any], model: Any = None, *,
                 allow_mismatch: bool = False) -> DecodeConfig:
    """A profile's config with knobs laid over it, or the knobs alone (mode defaults fill the rest). Given another
    `mode` than the profile's, only the profile's `gen_length`, `block_size`, `temperature` and `seed` are kept.
    With `model` (a model or its source dict) a profile tuned for another model is refused unless `allow_mismatch`."""
    from .profile import load_profile

    if profile:
        base = load_profile(profile, model, allow_mismatch=allow_mismatch).to_dict()
        if "mode" in knobs and knobs["mode"] != base["mode"]:
            base = {k: v for k, v in base.items() if k in {"gen_length", "block_size", "temperature", "seed"}}
        return DecodeConfig.from_dict({**base, **knobs})
    return DecodeConfig.from_dict(knobs)


def main(argv: list[str] | None = None) -> int:
    """`python -m decoder generate | serve` on `argv` (default: `sys.argv[1:]`); returns the exit code, a
    `DecoderError` being one line on stderr and exit 2."""
    parser = OneLineParser(prog="python -m decoder", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="decode one prompt and print the completion and the cost counters")
    gen.add_argument("--model", required=True, help="checkpoint dir, bundled name (dtune/tiny-arith) or hub id")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--profile", help="a profile JSON exported by the tuner")
    gen.add_argument("--allow-model-mismatch", action="store_true",
                     help="use --profile even though it was tuned for another model (id or fingerprint)")
    gen.add_argument("--chat-template", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    gen.add_argument("--device")
    gen.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    gen.add_argument("--compile", action="store_true",
                     help="the fused decoder path (fewer, larger kernels), with torch.compile on CUDA (docs/decoder.md)")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    add_knob_arguments(gen)
    _add_serve_parser(sub)
    args = parser.parse_args(argv)
    try:
        return _serve(args) if args.command == "serve" else _generate(args)
    except DecoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0-65535 (0: any free port)."""
    value = non_negative_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0 (seconds)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _add_serve_parser(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve a profile over HTTP: OpenAI-compatible completions and chat, "
                                         "dynamic batching, block streaming (docs/serving.md)")
    serve.add_argument("--model", required=True, help="checkpoint dir, bundled name (dtune/tiny-arith) or hub id")
    serve.add_argument("--profile", required=True, help="a profile file, or models:/NAME@ALIAS (re-read on SIGHUP)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=port_number, default=8000, help="0 picks a free port (default 8000)")
    serve.add_argument("--served-model-name", help="the `model` requests name (default: --model)")
    serve.add_argument("--max-batch-size", type=positive_int, default=16, help="rows per batch (default 16)")
    serve.add_argument("--max-wait-ms", type=non_negative_int, default=5,
                       help="how long a batch waits for more requests once one arrived (default 5)")
    serve.add_argument("--reload-interval", type=positive_float, metavar="SECONDS",
                       help="re-read the profile this often (default: only on SIGHUP)")
    serve.add_argument("--drain-timeout", type=positive_float, metavar="SECONDS",
                       help="on SIGTERM, cancel requests still running after this long (default: wait for all)")
    serve.add_argument("--allow-model-mismatch", action="store_true",
                       help="serve --profile even though it was tuned for another model")
    serve.add_argument("--device")
    serve.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    serve.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    serve.add_argument("--no-access-log", dest="access_log", action="store_false", help="no line per request")


def _serve(args: argparse.Namespace) -> int:
    try:
        from .serving.engine import BatchOptions
        from .serving.server import ServeOptions, serve
    except ImportError as exc:
        raise ServeError(f"serving needs the {exc.name} package: pip install 'dtune[serve]'") from None

    return serve(ServeOptions(
        model=args.model, profile=args.profile, host=args.host, port=args.port, name=args.served_model_name,
        batch=BatchOptions(args.max_batch_size, args.max_wait_ms / 1000), device=args.device, dtype=args.dtype,
        allow_model_mismatch=args.allow_model_mismatch, reload_interval_s=args.reload_interval,
        drain_timeout_s=args.drain_timeout, access_log=args.access_log, log_level=args.log_level))


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .decoding import generate
    from .loading import inspect_checkpoint, load_model, load_tokenizer, resolve_device
    from .prompts import encode_prompt

    # Every input is checked before the weights load: the knobs, the device, the checkpoint's files, the profile
    # against this checkpoint, and the prompt against its tokenizer (a chat template it may lack).
    knobs = knobs_from_args(args)
    build_config(args.profile, knobs)
    resolve_device(args.device)
    source = inspect_checkpoint(args.model)
    config = build_config(args.profile, knobs, source, allow_mismatch=args.allow_model_mismatch)
    tokenizer = load_tokenizer(Path(source["path"]))
    ids = encode_prompt(tokenizer, args.prompt, chat_template=args.chat_template)  # as the tuner encodes it
    model, _ = load_model(args.model, device=args.device, dtype=args.dtype, with_tokenizer=False,
                          compile=args.compile)
    result = generate(model, [ids], config, tokenizer=tokenizer)
    counters = result.counters.to_dict()
    if args.json:
        print(json.dumps({"completion": result.texts[0], "prompt_tokens": len(ids), "counters": counters,
                          "config": config.to_dict(), "model": model.source, "compile": args.compile}))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(result.texts[0], markup=False, highlight=False)
    table = Table(title=f"{config.mode} decoding{' (--compile)' if args.compile else ''}", show_header=True)
    table.add_column("counter")
    table.add_column("value", justify="right")
    for key, value in counters.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    return 0
