"""`cir loadtest`: a bounded load test of `cir serve` on loopback (8 clients, 500 searches by default), beside the
in-process `Pipeline.search` latency measured in the same run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CirError
from .common import add_config_options, cache_flag, check_outputs, load_config, prepare_synthetic
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("loadtest", help="load `cir serve` on loopback with concurrent clients, beside in-process search")
    add_config_options(p)
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default %(default)s)")
    p.add_argument("--searches", type=int, default=500, help="searches in all (default %(default)s)")
    p.add_argument("-k", "--k", type=int, default=10, help="results per search (default %(default)s)")
    p.add_argument("--json", type=Path, help="write every figure as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..io import write_json
    from ..machine import machine_description
    from ..serve.load import LoadSettings, run_load
    from .serve import build_service

    if args.clients < 1 or args.searches < 1 or args.k < 1:
        raise CirError("--clients, --searches and -k are whole numbers of at least 1")
    cfg = load_config(args)
    check_outputs([("--json", args.json, "file"), (cache_flag(args), cfg.cache_dir, "folder")])
    prepare_synthetic(cfg, args, [cfg.benchmark.split])
    service = build_service(cfg, None)
    result = run_load(service, LoadSettings(clients=args.clients, searches=args.searches, k=args.k))
    b = service.benchmark
    table = Table(title=f"cir serve under load: {args.clients} clients, {result['searches']} searches "
                        f"({result['failed']} failed), {result['throughput_per_s']:.1f} searches/s",
                  caption=f"{b.label} gallery ({len(service.gallery)} images), {result['settings']['pipeline']}, "
                          f"k {args.k}; loopback; {machine_description()}")
    for column in ("", "p50 ms", "p95 ms", "mean ms"):
        table.add_column(column, justify="right" if column else "left")
    for label, key in (("client (queue + HTTP + search)", "client"), ("server, per search (inside the lock)", "server"),
                       ("in-process Pipeline.search", "in_process")):
        row = result[key]
        table.add_row(label, *(f"{row.get(m, float('nan')):.1f}" for m in ("p50_ms", "p95_ms", "mean_ms")))
    console.print(table)
    console.print(f"server p50 / in-process p50 = {result['server_p50_over_in_process']:.2f}")
    if args.json:
        write_json(args.json, {**result, "machine": machine_description(), "benchmark": b.label})
    return 0 if result["failed"] == 0 else 1
