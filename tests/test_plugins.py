"""Plugin stages: the example distribution of docs/extending.md, pip-installed for real, found through its entry
points, and run through `cir stages`, `cir eval`, `cir search` and the Pipeline with no change to cir's code."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cir.cli import main

REPO = Path(__file__).resolve().parents[1]
EXTENDING = REPO / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```\s*$", re.S | re.M)
DISTRIBUTION = "cir-example-plugin"


def blocks() -> list[tuple[str, dict[str, str], str]]:
    """(language, fence attributes, text) of every fenced block of docs/extending.md, in order."""
    found = []
    for language, info, text in FENCE.findall(EXTENDING.read_text()):
        attributes = {key: quoted or bare for key, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|(\S+))', info)}
        found.append((language, attributes, text))
    return found


def resolve(text: str, synth: Path, cache: Path) -> str:
    """The page's placeholders resolved to the tiny synthetic benchmark and a test cache."""
    return text.replace("data/synth", str(synth)).replace(".cir-cache", str(cache))


@pytest.fixture(scope="module")
def plugin(tmp_path_factory, synth_tiny: Path):
    """The page's files written out and pip-installed (no network: no dependencies, no build isolation)."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / DISTRIBUTION
    cache = work / "cache"
    written = []
    for _, attributes, text in blocks():
        if "file" in attributes:
            target = (work if attributes["file"].endswith(".yaml") else source) / attributes["file"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(resolve(text, synth_tiny, cache))
            written.append(attributes["file"])
    assert {"pyproject.toml", "cir_example_plugin/stages.py", "example-plugin.yaml"} <= set(written)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", str(source)], check=True)
    importlib.invalidate_caches()
    yield work
    subprocess.run(pip + ["uninstall", "-y", DISTRIBUTION], check=True)


def test_the_page_holds_the_plugin_and_its_config() -> None:
    files = [a["file"] for _, a, _ in blocks() if "file" in a]
    assert files == ["pyproject.toml", "cir_example_plugin/__init__.py", "cir_example_plugin/stages.py",
                     "example-plugin.yaml"]
    assert all(a.get("skip") for language, a, _ in blocks() if "file" not in a)  # the rest runs here, below


def test_plugin_stages_are_listed_with_their_distribution(plugin, capsys) -> None:
    assert main(["stages"]) == 0
    out = capsys.readouterr().out
    for name in ("mean-colour", "colour-change", "dense", "dual-encoder"):
        assert name in out
    assert f"{DISTRIBUTION} 0.1.0" in out


def test_plugin_reranker_runs_in_cir_eval_after_the_built_in_stages(plugin, synth_tiny, capsys) -> None:
    out = plugin / "eval"
    assert main(["eval", "--config", str(plugin / "example-plugin.yaml"), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "stage 1 + 2 + 3 (colour-change)" in table
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"stage1", "stage2", "stage3"}
    second = json.loads((out / "run.stage2.json").read_text())
    third = json.loads((out / "run.stage3.json").read_text())
    for qid, ranking in third.items():
        head2 = [i for i, _ in second[qid][:20]]
        head3 = [i for i, _ in ranking[:20]]
        assert sorted(head3) == sorted(head2)  # the plugin reordered exactly the dual encoder's top 20
        assert [i for i, _ in ranking[20:]] == [i for i, _ in second[qid][20:]]  # and kept the rest below


def test_plugin_retriever_feeds_the_built_in_reranker_in_eval_and_search(plugin, synth_tiny, capsys) -> None:
    config = plugin / "plugin-first.yaml"
    config.write_text(
        f"benchmark: {{name: cirr, release: synth, root: {synth_tiny}, split: val}}\n"
        "model: {name: blip-tiny, pretrained: synth}\n"
        "stage_one: {kind: mean-colour, k: 30, scale: 2.0}\n"
        "stage_two: {kind: dual-encoder}\n"
        f"cache_dir: {plugin / 'cache'}\n"
    )
    assert main(["eval", "--config", str(config)]) == 0
    assert "stage 1 (mean-colour)" in capsys.readouterr().out
    from cir.data import load_benchmark

    query = load_benchmark("cirr", synth_tiny, "val").queries[0]
    sheet = plugin / "sheet.png"
    assert main(["search", "--config", str(config), "--reference", query.reference, "--text", query.text,
                 "-k", "5", "--sheet", str(sheet)]) == 0
    assert sheet.is_file() and query.reference not in capsys.readouterr().out.split("reference")[0]


def test_a_plugin_setting_the_stage_does_not_take_is_one_line(plugin, synth_tiny, capsys) -> None:
    config = plugin / "bad.yaml"
    config.write_text(
        f"benchmark: {{name: cirr, release: synth, root: {synth_tiny}, split: val}}\n"
        "stage_one: {kind: mean-colour, scael: 2.0}\n"
        f"cache_dir: {plugin / 'cache'}\n"
    )
    assert main(["eval", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "unknown setting 'scael'" in err and "scale" in err and "bad.yaml" in err


def test_the_page_python_runs_with_the_plugin(plugin, monkeypatch) -> None:
    monkeypatch.chdir(plugin)
    for language, attributes, text in blocks():
        if language == "python" and "file" not in attributes:
            namespace: dict = {}
            exec(compile(text, f"{EXTENDING}:python", "exec"), namespace)
            assert repr(namespace["pipe"]) == "Pipeline(dense % 50 >> dual-encoder % 20 >> colour-change)"
            assert namespace["colour"].weight == 2.0
