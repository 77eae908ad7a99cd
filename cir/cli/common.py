"""Options and output shared by the sub-commands that run a configured experiment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Iterable

from rich.markup import escape

from ..config import Config
from ..errors import CirError


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (configs/*.yaml); default: the synthetic benchmark with the shipped tiny model")
    parser.add_argument("--root", help="override benchmark.root (the dataset folder)")
    parser.add_argument("--split", help="override benchmark.split")
    parser.add_argument("--category", choices=("dress", "shirt", "toptee"), help="override benchmark.category (FashionIQ)")
    parser.add_argument("--cache-dir", help="override cache_dir (the gallery feature cache)")
    parser.add_argument("--device", help="override model.device (cpu, cuda)")
    parser.add_argument("--no-generate", action="store_true",
                        help="refuse, rather than write, missing splits of the synthetic benchmark (release 'synth')")


def load_config(args: argparse.Namespace) -> Config:
    cfg = Config.load(args.config) if args.config else Config()
    if args.root:
        cfg.benchmark.root = args.root
    if args.split:
        cfg.benchmark.split = args.split
    if args.category:
        cfg.benchmark.category = args.category
    if args.cache_dir:
        cfg.cache_dir = args.cache_dir
    if args.device:
        cfg.model.device = args.device
    return cfg


def report_caption(benchmark, cfg: Config) -> str:
    """Benchmark, split, protocol, model and machine: every table says where its numbers come from."""
    from ..machine import machine_description

    files = ", ".join(p for p in (cfg.model.stage1, cfg.model.stage2) if p)
    weights = files or f"pretrained {cfg.model.pretrained}" if (files or cfg.model.pretrained) else "random weights"
    return f"{benchmark.protocol}\nmodel: {cfg.model.name} ({weights}); machine: {machine_description()}"


def check_output(flag: str, path: str | os.PathLike | None, kind: str = "file") -> None:
    """Refuse, before any work, an output path that cannot be written: `kind` "file" (replaced atomically, so its
    folder must be writable) or "folder" (created if absent). The message names `flag` and the path.

    Permissions are read with `os.access`, which is what the process may do (root may write a read-only folder).
    """
    if path is None:
        return
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise CirError(f"{flag} {path}: is a folder; give a file path")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise CirError(f"{flag} {path}: is a file; give a folder")
    # The first existing folder on the way is where the file, or the missing folders, will be created.
    existing = path if kind == "folder" and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CirError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CirError(f"{flag} {path}: the folder {existing} is not writable")


def check_outputs(outputs: Iterable[tuple[str, str | os.PathLike | None, str]]) -> None:
    """`check_output` for each (flag, path, kind) in order; the first that fails is the message."""
    for flag, path, kind in outputs:
        check_output(flag, path, kind)


def cache_flag(args: argparse.Namespace) -> str:
    """How the user named the cache folder: the flag, or the config key."""
    return "--cache-dir" if getattr(args, "cache_dir", None) else "cache_dir (config)"


def is_synthetic(cfg: Config, args: argparse.Namespace) -> bool:
    """Whether the config's benchmark is cir's synthetic one: release "synth", a folder whose metadata.json says so,
    or (no --config) the built-in default at a folder that does not exist yet or is empty."""
    from ..data.synth.layout import read_own_metadata

    b = cfg.benchmark
    if b.name != "cirr":
        return False
    root = Path(b.root)
    if b.release == "synth" or read_own_metadata(root) is not None:
        return True
    fresh = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    return args.config is None and b.release is None and fresh


def prepare_synthetic(cfg: Config, args: argparse.Namespace, splits: Iterable[str]) -> None:
    """Write the `splits` the synthetic benchmark at `benchmark.root` lacks, as `cir demo` does (with a line saying
    so), or with --no-generate refuse with the command that writes them. Other benchmarks: nothing to do.

    A folder that already holds the synthetic benchmark keeps its size, seed and image size (the missing splits are
    added to it); a new one gets the default size, the one the shipped model was trained on."""
    from ..data.synth import complete_splits, ensure_synthetic, write_command
    from ..data.synth.layout import GENERATOR_VERSION, SPLITS, read_own_metadata
    from ..data.synth.writer import check_can_write
    from .console import console

    if not is_synthetic(cfg, args):
        return
    root = Path(cfg.benchmark.root)
    metadata = read_own_metadata(root) or {}
    params = {"size": metadata.get("size", "default"), "seed": metadata.get("seed", 0),
              "image_size": metadata.get("image_size", 64)}
    wanted = tuple(dict.fromkeys(splits))
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown:
        raise CirError(f"split {unknown[0]!r}: the synthetic benchmark has the splits {', '.join(SPLITS)}")
    present = complete_splits(root, **params) if metadata.get("version") in (None, GENERATOR_VERSION) else ()
    missing = [s for s in wanted if s not in present]
    if not missing:
        return
    flag = "--root" if args.root else "benchmark.root (config)"
    if args.no_generate:
        # `cir data synth` replaces the folder: name every split it should then hold
        command = write_command(root, [s for s in SPLITS if s in present or s in wanted], **params)
        raise CirError(f"{root} lacks the synthetic {'/'.join(missing)} split{'s' * (len(missing) > 1)} "
                       f"(--no-generate): write {'them' if len(missing) > 1 else 'it'} with `{command}`")
    check_output(flag, root, "folder")
    check_can_write(root, **params, flag=flag)
    console.print(f"writing the synthetic benchmark's {'/'.join(missing)} split{'s' * (len(missing) > 1)} "
                  f"(size {params['size']}) to {escape(str(root))}; --no-generate refuses instead")
    ensure_synthetic(root, splits=missing, flag=flag, **params)
