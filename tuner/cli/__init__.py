"""`python -m tuner run | eval | show | export | promote | tasks`: one module per subcommand, dispatched from here.

A command's module is imported only once it runs, so `--help` and argument errors import neither torch, MLflow nor
Optuna and answer at once. Exit codes (`tuner.base.errors`): 0, 2 (one line on stderr), 3 (export refused), 130.
"""

from __future__ import annotations

import importlib
import sys

from ..base.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_REFUSED
from .parser import build_parser

# subcommand -> the module under tuner.cli that runs it (its `main(args)` returns the exit code)
COMMANDS = {"run": "run", "eval": "evaluate", "show": "show", "export": "export", "promote": "promote",
            "tasks": "tasks"}


def main(argv: list[str] | None = None) -> int:
    """Run the subcommand `argv` names (default: `sys.argv[1:]`) and return its exit code; a deliberate error
    (`TunerError`, `DecoderError`) is one line on stderr, never a traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # `run --n-workers` hands the same command to its workers
    from decoder.errors import DecoderError

    from ..base.errors import RefusedError, TunerError, one_line
    from ..base.logs import quiet_libraries

    quiet_libraries()  # no library log line before a command's one-line error

    try:
        command = importlib.import_module(f".{COMMANDS[args.command]}", __name__)
        return command.main(args)
    except RefusedError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (TunerError, DecoderError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished trials are kept in the study; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
