"""The docs are executable: every ```python block and every `cir ...` line of the ```bash blocks of README.md and
docs/*.md runs against the tiny synthetic benchmark (fixture `synth_tiny`).

How a page runs: its blocks run in page order, in a fresh temporary working directory, Python blocks in one
namespace (a later block uses an earlier block's names), `cir` lines in-process through `cir.cli.main` (one torch
import for the whole file; exit code 0 expected). A failure names the page and the line of the block (Python
tracebacks point at the page's own line numbers). Lines of a bash block that are not `cir ...` commands are not run.

Placeholders, resolved by the working directory rather than by editing the text:
- `data/synth` is a link to the tiny synthetic benchmark (only that exact path: `data/synth-tiny` is a folder of its
  own); `data/cirr` a link to the real CIRR annotations in ../shared/benchmarks (scoring and submission files need
  no images);
- `.cir-cache` is a link to one feature cache shared by every page, so the tiny gallery is encoded once;
- `runs/...`, `docs/images/...`, `oracle.json` and every other relative output path land in the temporary folder;
- `configs/` is a copy of the repository's configs whose training sections are cut to tiny size (one epoch on 120
  training queries, 40 of them held out for calibration, 40 validation queries), so `cir train ...` runs in seconds
  here and its figures mean nothing.

Substitutions in the command lines (the only edits made to what a page says):
- `cir data synth --out DIR ...` writes to a fresh temporary folder, at `--size tiny` unless a size is given.

Blocks that cannot run here by nature carry a reason in their fence info (```` ```bash skip="needs the CIRR images"
````); the test asserts each skip has one and that skipped blocks stay at most MAX_SKIPPED_SHARE of all blocks.
File blocks (```` ```python file=... ````, docs/extending.md's plugin) are written and run by tests/test_plugins.py,
not here.
"""

from __future__ import annotations

import glob
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)
ATTRIBUTE = re.compile(r'(\w+)=(?:"([^"]*)"|(\S+))')
MAX_SKIPPED_SHARE = 0.35  # skipped python/bash blocks over all python/bash blocks (file= blocks not counted)


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    language: str
    attributes: dict[str, str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def page_blocks(page: Path) -> list[Block]:
    source = page.read_text()
    found = []
    for match in FENCE.finditer(source):
        language, info, text = match.groups()
        attributes = {key: quoted or bare for key, quoted, bare in ATTRIBUTE.findall(info)}
        found.append(Block(page, source.count("\n", 0, match.start()) + 1, language, attributes, text))
    return found


def runnable_kind(block: Block) -> bool:
    return block.language in ("python", "bash") and "file" not in block.attributes


def all_blocks() -> list[Block]:
    return [b for page in PAGES for b in page_blocks(page) if runnable_kind(b)]


def test_pages_exist() -> None:
    names = {p.name for p in PAGES}
    for name in ("README.md", "benchmarks.md", "models.md", "synthetic.md", "stages.md", "performance.md",
                 "training.md", "extending.md", "limitations.md", "python-api.md"):
        assert name in names, f"missing page {name}"
    assert (REPO / "docs" / "images" / "search.png").is_file(), "the README's picture docs/images/search.png is missing"


def test_every_skip_has_a_reason_and_skips_stay_few() -> None:
    blocks = all_blocks()
    skipped = [b for b in blocks if "skip" in b.attributes]
    for block in skipped:
        assert block.attributes["skip"].strip(), f"{block.where}: skip without a reason (write skip=\"why\")"
    share = len(skipped) / len(blocks)
    assert share <= MAX_SKIPPED_SHARE, (
        f"{len(skipped)} of {len(blocks)} blocks skipped ({share:.0%} > {MAX_SKIPPED_SHARE:.0%}): "
        + "; ".join(f"{b.where} ({b.attributes['skip']})" for b in skipped))


def test_readme_is_a_front_door() -> None:
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) <= 12_000, f"README.md is {len(readme.encode())} bytes: move depth into docs/"
    for command in (
        'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . && cir demo',
        'python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e ".[dev]" '
        '&& python -m pytest',
    ):
        assert command in readme, f"README.md lost the command {command!r}"
    assert "docs/images/search.png" in readme
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO / link).exists(), f"README.md links to a missing {link}"


# --- running the pages ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("docs-cache")


def tiny_training(config: dict) -> dict:
    """A config's training sections cut to tiny size: one epoch on 120 queries, 40 validation, 40 calibration."""
    for section, settings in config.items():
        if section.startswith("train_") and isinstance(settings, dict):
            settings["epochs"] = 1
            settings["max_queries"] = 120
            options = settings.setdefault("options", {}) or {}
            if section == "train_stage2":
                options["calibration_queries"] = 40
                options["val_queries"] = 40
            settings["options"] = options
    return config


def workdir(root: Path, synth: Path, cache: Path, benchmarks: Path) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "data" / "synth").symlink_to(synth, target_is_directory=True)
    (root / "data" / "cirr").symlink_to(benchmarks / "cirr", target_is_directory=True)
    (root / ".cir-cache").symlink_to(cache, target_is_directory=True)
    (root / "docs" / "images").mkdir(parents=True)
    (root / "configs").mkdir()
    for path in (REPO / "configs").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        (root / "configs" / path.name).write_text(yaml.safe_dump(tiny_training(config), sort_keys=False))
    return root


def cir_lines(block: Block) -> list[tuple[int, str]]:
    """(page line, command) of every `cir ...` line of a bash block."""
    out = []
    for offset, line in enumerate(block.text.splitlines(), start=1):
        if line.strip().startswith("cir "):
            out.append((block.line + offset, line.strip()))
    return out


def resolve_command(argv: list[str], scratch: Path, counter: list[int]) -> list[str]:
    """Expand globs as a shell would; send `cir data synth` to a fresh folder at tiny size."""
    expanded = []
    for arg in argv:
        matches = sorted(glob.glob(arg)) if any(c in arg for c in "*?[") else []
        expanded.extend(matches or [arg])
    if expanded[:2] == ["data", "synth"]:
        counter[0] += 1
        out = str(scratch / f"generated-{counter[0]}")
        if "--out" in expanded:
            expanded[expanded.index("--out") + 1] = out
        else:
            expanded += ["--out", out]
        if "--size" not in expanded:
            expanded += ["--size", "tiny"]
    return expanded


def run_cir(argv: list[str]) -> int:
    from cir.cli import main

    try:
        return int(main(argv) or 0)
    except SystemExit as exc:  # argparse: an unknown flag is exit code 2
        return exc.code if isinstance(exc.code, int) else 1


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_runs(page: Path, synth_tiny: Path, shared_cache: Path, benchmarks_dir: Path, tmp_path: Path,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = [b for b in page_blocks(page) if runnable_kind(b) and "skip" not in b.attributes]
    if not blocks:
        pytest.skip(f"{page.name} has no runnable blocks")  # every block carries its skip reason
    root = workdir(tmp_path / "cwd", synth_tiny, shared_cache, benchmarks_dir)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.chdir(root)
    namespace: dict = {"__name__": "__docs__"}
    failures: list[str] = []
    counter = [0]
    for block in blocks:
        if block.language == "python":
            code = compile("\n" * block.line + block.text, str(page), "exec")
            try:
                exec(code, namespace)
            except Exception:  # noqa: BLE001 - every failure is reported with its page line
                failures.append(f"{block.where}: python block failed\n{traceback.format_exc(limit=-3)}")
        else:
            for line_number, command in cir_lines(block):
                argv = resolve_command(shlex.split(command, comments=True)[1:], scratch, counter)
                try:
                    code = run_cir(argv)
                except Exception:  # noqa: BLE001
                    failures.append(f"{page.relative_to(REPO)}:{line_number}: `{command}` raised\n"
                                    f"{traceback.format_exc(limit=-3)}")
                    continue
                if code != 0:
                    failures.append(f"{page.relative_to(REPO)}:{line_number}: `{command}` exited {code}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def test_the_placeholders_are_the_ones_resolved() -> None:
    """Every data path a runnable block names is one this test resolves, so no block reaches outside its folder."""
    for block in all_blocks():
        if "skip" in block.attributes:
            continue
        for path in re.findall(r"(?<![\w/.-])(data/[\w.-]+)", block.text):
            assert path in ("data/synth", "data/cirr", "data/synth-tiny"), f"{block.where}: unresolved {path}"
        assert "/work/" not in block.text, f"{block.where}: an absolute path of this machine"
