"""`tuner tasks`: the registered tasks and the built-in study spec of each."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ..base.errors import EXIT_OK
from ..study.spec import builtin_specs
from ..tasks import list_tasks


def main(args: argparse.Namespace) -> int:
    """Print the registered tasks and each one's built-in study spec; returns the exit code."""
    specs = builtin_specs()
    table = Table(title="tasks")
    table.add_column("task")
    table.add_column("study spec")
    for name in list_tasks():
        table.add_row(name, f"tuner/studies/{name}.yaml" if name in specs else "-")
    Console().print(table)
    return EXIT_OK
