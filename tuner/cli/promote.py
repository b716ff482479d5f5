"""`tuner promote`: move a registered profile's `production` alias to a version (by default the `candidate`)."""

from __future__ import annotations

import argparse

from rich.console import Console

from ..base.errors import EXIT_OK


def main(args: argparse.Namespace) -> int:
    """Point an alias of a registered profile at a version and print what was promoted; returns the exit code."""
    from ..tracking.registry import check_alias, check_name, model_uri, promote
    from ..tracking.store import check_reachable

    check_name(args.name)  # before MLflow is even imported: a typo answers at once
    check_alias(args.alias)
    check_alias(args.from_alias)
    import mlflow

    uri = args.tracking_uri or mlflow.get_tracking_uri()
    check_reachable(uri, retries=1, backoff_s=0.5)
    done = promote(args.name, version=args.version, from_alias=args.from_alias, to_alias=args.alias,
                   force=args.force, tracking_uri=uri)
    t = done.tags
    was = f" (was version {done.previous})" if done.previous and done.previous != done.version else ""
    Console().print(
        f"{done.name} version {done.version} → alias [bold]{done.alias}[/]{was}: {t.get('task', '?')} on "
        f"{t.get('model', '?')}, test accuracy {t.get('test_accuracy', '?')}% [95% CI "
        f"{t.get('test_accuracy_ci95', '?')}], {t.get('speedup_tokens_per_s', '?')}x the baseline's tokens/s\n"
        f"production code: decoder.load_profile({model_uri(done.name, done.alias)!r})", soft_wrap=True)
    return EXIT_OK
