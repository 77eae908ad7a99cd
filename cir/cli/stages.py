"""`cir stages`: the stage-one and stage-two stages cir can build by name, built-in and from installed plugins."""

from __future__ import annotations

import argparse

from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "stages",
        help="list the stages a config can name (built-in and plugins)",
        description="List the stage-one retrievers and stage-two rerankers by name: cir's own and those that installed "
        "distributions declare in the entry-point groups cir.retrievers and cir.rerankers.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..registry import rerankers, retrievers

    table = Table(title="stages (stage_one.kind / stage_two.kind)")
    for column in ("kind", "stage", "from", "what it is"):
        table.add_column(column)
    for role, registry in (("stage one", retrievers), ("stage two", rerankers)):
        for name in registry.names():
            stage = registry.get(name)
            doc = (stage.__doc__ or "").strip().splitlines()
            table.add_row(escape(name), role, escape(registry.origin(name)), escape(doc[0] if doc else ""))
    console.print(table)
    return 0
