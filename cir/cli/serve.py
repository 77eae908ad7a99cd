"""`cir serve`: the JSON API and the search page over the configured pipeline, its gallery indexed before the port
opens. Binds 127.0.0.1 unless told otherwise; Ctrl-C or SIGTERM shuts it down cleanly."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CirError
from .common import add_config_options, cache_flag, check_output, load_config, prepare_synthetic
from .console import console


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve the search page and the JSON API over a configured pipeline")
    add_config_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    p.add_argument("--gallery", type=Path, help="serve this folder of images instead of the config's benchmark gallery")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted (default %(default)s MB)")
    p.set_defaults(func=run)


def build_service(cfg, gallery_dir: Path | None):
    """The indexed pipeline of a config, as a SearchService (with the benchmark's queries unless --gallery)."""
    from ..experiment import build_pipeline, open_benchmark
    from ..serve.service import SearchService, describe_model
    from ..types import Gallery

    benchmark = None if gallery_dir else open_benchmark(cfg)
    gallery = Gallery.from_folder(gallery_dir) if gallery_dir else benchmark.gallery
    pipeline = build_pipeline(cfg, benchmark)
    pipeline.exclude_reference = True  # a search never shows its own reference
    pipeline.index(gallery)
    return SearchService(pipeline, gallery, benchmark, about={**describe_model(pipeline), "config": cfg.source})


def _quiet_exit_server(uvicorn):
    """uvicorn's Server, whose Ctrl-C / SIGTERM finish the graceful shutdown and return (uvicorn itself re-raises
    the signal afterwards, so the process would end by it, exit code -15, before saying it shut down)."""
    import signal
    from contextlib import contextmanager

    class Server(uvicorn.Server):
        @contextmanager
        def capture_signals(self):
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def run(args: argparse.Namespace) -> int:
    from ..errors import require

    require("fastapi", "serve", "fastapi")
    uvicorn = require("uvicorn", "serve", "uvicorn")
    from ..serve.app import create_app
    from ..serve.uploads import UploadLimits

    if not 1 <= args.port <= 65535:
        raise CirError(f"--port {args.port}: a port is a number from 1 to 65535")
    if args.max_upload_mb <= 0:
        raise CirError(f"--max-upload-mb {args.max_upload_mb:g}: must be above 0")
    cfg = load_config(args)
    check_output(cache_flag(args), cfg.cache_dir, "folder")
    if not args.gallery:
        prepare_synthetic(cfg, args, [cfg.benchmark.split])
    service = build_service(cfg, args.gallery)
    app = create_app(service, UploadLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024)))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = _quiet_exit_server(uvicorn)(config)
    console.print(f"{service.pipeline!r} over {len(service.gallery)} images; serving on http://{args.host}:{args.port}/ "
                  "(Ctrl-C stops)", highlight=False)
    server.run()
    console.print("shut down")
    return 0
