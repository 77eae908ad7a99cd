"""Found as a new user (issue P8): the synthetic benchmark written when a command needs it, output paths checked
before the work, one-line errors for broken sparse heads and bad search arguments, escaped terms, the search sheet's
text, thread settings, and file fingerprints."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cir.cli import main
from cir.errors import CirError, FormatError

REPO = Path(__file__).resolve().parents[1]
SPARSE_HEAD = REPO / "cir" / "checkpoints" / "blip-tiny-synth-sparse.safetensors"
STAGE1 = REPO / "cir" / "checkpoints" / "blip-tiny-synth-stage1.safetensors"
SYNTH_CONFIG = str(REPO / "configs" / "synth-tiny.yaml")


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command gets as far as loading a model or evaluating."""
    import cir.experiment
    import cir.models

    def fail(*args, **kwargs):
        pytest.fail("a model was loaded before the arguments were checked")

    monkeypatch.setattr(cir.models, "model_from_settings", fail)
    monkeypatch.setattr(cir.experiment, "evaluate", fail)


# A: the synthetic benchmark is written when a command needs it, or refused with --no-generate


@pytest.mark.parametrize("command", [["eval"], ["index"], ["search", "--reference", "x", "--text", "red"]])
def test_no_generate_refuses_with_the_command_to_run(command, tmp_path, capsys, no_model):
    root = tmp_path / "synth"
    assert main([*command, "--config", SYNTH_CONFIG, "--root", str(root), "--no-generate"]) == 2
    err = one_line_error(capsys)
    assert f"`cir data synth --out {root} --splits val`" in err and "github" not in err.lower()
    assert not root.exists()


def test_train_needs_train_and_val(tmp_path, capsys, no_model):
    root = tmp_path / "synth"
    code = main(["train", "stage1", "--config", SYNTH_CONFIG, "--root", str(root), "--no-generate",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert f"lacks the synthetic train/val splits (--no-generate): write them with `cir data synth --out {root} " \
           f"--splits train val`" in one_line_error(capsys)


def test_eval_writes_the_missing_split_first(tmp_path, capsys, monkeypatch):
    import cir.experiment
    import cir.models
    from cir.data.synth import is_complete

    root = tmp_path / "synth"
    seen = []

    def evaluate(cfg, split=None):
        seen.append(is_complete(cfg.benchmark.root, size="tiny", splits=("val",)))
        raise CirError("stop here")

    monkeypatch.setattr(cir.experiment, "evaluate", evaluate)
    # a folder that holds the tiny val split: the test split is added at its size, nothing else changes
    from cir.data.synth import generate

    generate(root, size="tiny", splits=("val",), workers=1)
    val_files = sorted(p.name for p in (root / "val").iterdir())
    assert main(["eval", "--config", SYNTH_CONFIG, "--root", str(root), "--split", "test"]) == 2
    out = capsys.readouterr().out
    assert "writing the synthetic benchmark's test split (size tiny)" in out
    assert is_complete(root, size="tiny") is False and is_complete(root, size="tiny", splits=("val", "test"))
    assert sorted(p.name for p in (root / "val").iterdir()) == val_files
    assert seen == [True]


def test_prepare_synthetic_leaves_other_benchmarks_alone(tmp_path):
    from cir.cli.common import prepare_synthetic
    from cir.config import Config

    cfg = Config()
    cfg.benchmark.release, cfg.benchmark.root = "rc2", str(tmp_path / "cirr")
    args = argparse.Namespace(config="x.yaml", root=None, no_generate=False)
    prepare_synthetic(cfg, args, ["val"])
    assert not (tmp_path / "cirr").exists()


def test_cirr_messages_never_send_a_synthetic_folder_to_the_cirr_download(synth_tiny, tmp_path):
    from cir.data import load_benchmark
    from cir.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError) as missing:
        load_benchmark("cirr", tmp_path / "synth", "val", release="synth")
    assert "cir data synth --out" in str(missing.value) and "github" not in str(missing.value).lower()

    partial = tmp_path / "partial"
    shutil.copytree(synth_tiny, partial)
    shutil.rmtree(partial / "test")
    (partial / "captions" / "cap.synth.test.json").unlink()
    with pytest.raises(DatasetNotFoundError) as lacking:
        load_benchmark("cirr", partial, "test", release="synth")
    assert "cir data synth --out" in str(lacking.value) and "github" not in str(lacking.value).lower()

    with pytest.raises(DatasetNotFoundError) as unknown:  # release unknown: either may be meant, synthetic first
        load_benchmark("cirr", tmp_path / "nothing", "val")
    assert str(unknown.value).index("cir data synth") < str(unknown.value).index("github")


def test_data_show_of_a_missing_folder_names_the_command(tmp_path, capsys):
    assert main(["data", "show", str(tmp_path / "none")]) == 2
    assert f"`cir data synth --out {tmp_path / 'none'}`" in one_line_error(capsys)


# B: output paths are checked before the work


def _blocked(tmp_path: Path) -> Path:
    """A path under a regular file: no one can write there, root included."""
    (tmp_path / "file.txt").write_text("x")
    return tmp_path / "file.txt" / "sub"


OUTPUT_COMMANDS = {
    "eval --out": ["eval", "--out", "{p}"],
    "eval --cache-dir": ["eval", "--cache-dir", "{p}"],
    "index --cache-dir": ["index", "--cache-dir", "{p}"],
    "demo --out": ["demo", "--out", "{p}"],
    "demo --data": ["demo", "--data", "{p}"],
    "search --sheet": ["search", "--reference", "x", "--text", "red", "--sheet", "{p}/s.png"],
    "score --json": ["score", "cirr", "--run", "r.json", "--json", "{p}/s.json"],
    "score --csv": ["score", "cirr", "--run", "r.json", "--csv", "{p}/s.csv"],
    "submit --out": ["submit", "cirr", "--run", "r.json", "--out", "{p}"],
    "bench --json": ["bench", "--json", "{p}/b.json"],
    "bench --cache-dir": ["bench", "--cache-dir", "{p}"],
    "train --out": ["train", "stage1", "--out", "{p}"],
    "data synth --out": ["data", "synth", "--out", "{p}"],
}


@pytest.mark.parametrize("name", OUTPUT_COMMANDS)
def test_an_unwritable_output_is_refused_before_the_work(name, tmp_path, capsys, no_model):
    blocked = _blocked(tmp_path)
    argv = [a.replace("{p}", str(blocked)) for a in OUTPUT_COMMANDS[name]]
    assert main(argv) == 2
    err = one_line_error(capsys)
    flag = name.split()[-1]
    assert f"{flag} {blocked}" in err and "is a file, not a folder" in err


def test_a_folder_for_a_file_and_a_file_for_a_folder(tmp_path, capsys, no_model):
    assert main(["search", "--reference", "x", "--text", "red", "--sheet", str(tmp_path)]) == 2
    assert f"--sheet {tmp_path}: is a folder" in one_line_error(capsys)
    (tmp_path / "f").write_text("x")
    assert main(["eval", "--out", str(tmp_path / "f")]) == 2
    assert f"--out {tmp_path / 'f'}: is a file" in one_line_error(capsys)


def test_a_read_only_folder_is_refused(tmp_path, capsys, monkeypatch, no_model):
    # tests run as root, who may write anywhere: what counts is what os.access says the process may do
    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == tmp_path / "ro" else real_access(p, mode))
    assert main(["bench", "--markdown", str(tmp_path / "ro" / "b.md")]) == 2
    assert f"--markdown {tmp_path / 'ro' / 'b.md'}: the folder {tmp_path / 'ro'} is not writable" in one_line_error(capsys)


# C: a broken sparse head is one line


def test_a_truncated_sparse_head_is_one_line(tiny_model, tmp_path):
    from cir.stages.sparse_head import SparseEncoder

    truncated = tmp_path / "head.safetensors"
    truncated.write_bytes(SPARSE_HEAD.read_bytes()[: SPARSE_HEAD.stat().st_size // 2])
    with pytest.raises(FormatError) as caught:
        SparseEncoder.load(truncated, tiny_model)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{truncated}: not a readable safetensors file")


def test_a_stage_one_checkpoint_given_as_the_head_is_one_line(tiny_model):
    from cir.stages.sparse_head import SparseEncoder

    with pytest.raises(FormatError) as caught:
        SparseEncoder.load(STAGE1, tiny_model)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert message.startswith(f"{STAGE1}: a stage-one/stage-two model checkpoint, not a sparse head")
    assert "167 unexpected (stage1." in message and "missing (image.bias" in message


# D: cir demo never replaces a synthetic folder of another size; messages name the flag typed


def test_demo_refuses_a_synthetic_folder_of_another_size(synth_tiny, tmp_path, capsys, no_model):
    data = tmp_path / "synth"
    shutil.copytree(synth_tiny, data)
    before = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    assert main(["demo", "--data", str(data)]) == 2
    err = one_line_error(capsys)
    assert f"{data} holds the synthetic benchmark at size tiny (splits train, val, test)" in err
    assert "another --data folder" in err and f"`cir data synth --out {data} --size default`" in err
    assert sorted(str(p.relative_to(data)) for p in data.rglob("*")) == before
    assert "writing" not in capsys.readouterr().out


def test_a_foreign_folder_message_names_the_flag_typed(tmp_path, capsys, no_model):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.png").write_bytes(b"x")
    assert main(["demo", "--data", str(tmp_path / "mine")]) == 2
    assert "choose another --data" in one_line_error(capsys)
    assert (tmp_path / "mine" / "photo.png").read_bytes() == b"x"


# E, F: search arguments, escaped terms


@pytest.mark.parametrize("argv, message", [
    (["-k", "-3"], "-k -3: the number of results must be at least 1"),
    (["-k", "0"], "-k 0: the number of results must be at least 1"),
    (["--text", "   "], "--text is blank"),
    (["--text", ""], "--text is blank"),
])
def test_search_refuses_bad_k_and_blank_text_before_loading(argv, message, tmp_path, capsys, no_model):
    base = {"--text": "make it red", "-k": "10"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    full = ["search", "--reference", "x", "--sheet", str(tmp_path / "s.png"),
            *(item for pair in base.items() for item in pair)]
    assert main(full) == 2
    assert message in one_line_error(capsys)


def test_k_beyond_the_gallery_is_capped_with_a_note(capsys):
    from cir.cli.search import capped_k

    assert capped_k(500, 40) == 40 and capped_k(10, 40) == 10
    assert "-k 500 is more than the gallery's 40 images" in capsys.readouterr().out


def test_bracketed_terms_and_ids_are_printed(capsys):
    from rich.console import Console

    from cir.cli.search import results_table

    table = results_table("Pipeline(dense): 'make it [red]'", "reference [img]",
                          [["1", "[id]", "0.500", "2", "[unused416] 0.30, red 0.20"]], explained=True)
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "[unused416] 0.30" in text and "[id]" in text and "make it [red]" in text and "reference [img]" in text

    assert main(["data", "show", str(Path("/nonexistent") / "[unused1]")]) == 2
    assert "[unused1]" in one_line_error(capsys)


# G: the search sheet's text


def test_sheet_text_wraps_above_the_thumbnails(tmp_path):
    from PIL import Image

    from cir.cli.sheet import MAX_TEXT_LINES, PAD, THUMB, results_sheet, sheet_font, wrap_text
    from cir.pipeline import Result

    text = "make the large red circle at the top left a small blue square in the bottom right corner " * 12
    font, _ = sheet_font()
    assert len(wrap_text(text, font, 400)) == MAX_TEXT_LINES and wrap_text(text, font, 400)[-1].endswith("…")
    results = [Result(f"image-{i}-with-a-rather-long-name", 0.5, i + 1, i + 2) for i in range(7)]
    path = results_sheet(Image.new("RGB", (64, 64), (0, 160, 0)), text, results,
                         lambda _: Image.new("RGB", (64, 64), (0, 0, 200)), tmp_path / "s.png")
    with Image.open(path) as sheet:
        pixels = np.asarray(sheet.convert("RGB")).astype(int)
    blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 60)
    dark = pixels.max(axis=2) < 140  # text: grey to black
    thumb_rows = np.flatnonzero(blue.any(axis=1))
    first_thumb = thumb_rows[0]
    header = dark[:first_thumb, 2 * PAD + THUMB:]
    assert header.any()  # the text was drawn
    assert not dark[first_thumb : first_thumb + THUMB].any()  # no text row in the first thumbnail row
    assert not dark[:, -PAD // 2 :].any()  # nor past the right margin


def test_cjk_text_draws_with_the_font_reported(tmp_path):
    from PIL import Image

    from cir.cli.sheet import results_sheet, sheet_font

    _, name = sheet_font()
    assert name == "Pillow default" or Path(name).is_file()
    results_sheet(Image.new("RGB", (64, 64)), "把左上角的红色大圆变成蓝色的小正方形" * 5, [], lambda _: None,
                  tmp_path / "cjk.png")
    assert (tmp_path / "cjk.png").is_file()


# H: threads


def test_threads_follow_the_cpu_affinity_and_do_not_spin():
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from cir.machine import configure_threads, machine_description; configure_threads(); import torch; "
            "print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY']); print(machine_description())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    first, description = out.stdout.splitlines()
    assert first == "1 PASSIVE" and "1 threads used" in description
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True)
    assert out.stdout.split()[1] == "ACTIVE"


# I: content fingerprints


def test_content_fingerprint_is_the_bytes_not_the_name(tmp_path):
    from cir.io import content_fingerprint

    (tmp_path / "a.png").write_bytes(b"same bytes")
    (tmp_path / "b.png").write_bytes(b"same bytes")
    (tmp_path / "c.png").write_bytes(b"other bytes")
    fingerprint = content_fingerprint(tmp_path / "a.png")
    assert fingerprint == hashlib.sha256(b"same bytes").hexdigest()[:16] == content_fingerprint(str(tmp_path / "b.png"))
    assert fingerprint != content_fingerprint(tmp_path / "c.png")
    assert json.dumps(fingerprint)  # a plain string
