"""Options and output shared by the sub-commands that run a configured experiment."""

from __future__ import annotations

import argparse

from ..config import Config


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config (configs/*.yaml); default: the synthetic benchmark with the shipped tiny model")
    parser.add_argument("--root", help="override benchmark.root (the dataset folder)")
    parser.add_argument("--split", help="override benchmark.split")
    parser.add_argument("--category", choices=("dress", "shirt", "toptee"), help="override benchmark.category (FashionIQ)")
    parser.add_argument("--cache-dir", help="override cache_dir (the gallery feature cache)")
    parser.add_argument("--device", help="override model.device (cpu, cuda)")


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
