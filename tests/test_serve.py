"""`cir serve` over HTTP, against a live uvicorn on a free loopback port: every endpoint, every refusal, and the
API's answers equal to the in-process Pipeline's for the same query."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from cir.config import Config
from cir.data import load_benchmark
from cir.experiment import build_pipeline


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def val(synth_tiny):
    return load_benchmark("cirr", synth_tiny, "val")


@pytest.fixture(scope="module")
def local(live_server, val):
    """The same config's pipeline, in this process."""
    pipeline = build_pipeline(Config.load(live_server.config), val)
    pipeline.exclude_reference = True
    return pipeline.index(val.gallery)


def error_of(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and "\n" not in body["error"]
    return body["error"]


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def test_health_info_and_openapi(client, val) -> None:
    assert client.get("/api/health").json() == {"status": "ok"}
    info = client.get("/api/info").json()
    assert info["model"] == "blip-tiny" and info["pretrained"] == "synth" and info["weights"]
    assert info["gallery"]["images"] == len(val.gallery) and info["pipeline"] == "Pipeline(sparse % 20 >> dual-encoder)"
    assert [s["label"] for s in info["stages"]] == ["stage 1 (sparse, csr)", "stage 1 + 2 (dual-encoder)"]
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/search", "/api/search/upload", "/api/rerank", "/api/image/{image_id}", "/api/info",
                 "/api/health", "/api/gallery", "/api/query/{query_id}"):
        assert path in paths


def test_search_equals_the_in_process_pipeline(client, local, val) -> None:
    for query in val.queries[:3]:
        answer = client.post("/api/search", json={"reference": query.reference, "text": query.text, "k": 8}).json()
        expected = local.search(query.reference, query.text, k=8)
        assert [r["id"] for r in answer["results"]] == [r.image_id for r in expected]
        assert [r["rank"] for r in answer["results"]] == [r.rank for r in expected]
        assert [r["stage1_rank"] for r in answer["results"]] == [r.stage1_rank for r in expected]
        assert [r["score"] for r in answer["results"]] == pytest.approx([r.score for r in expected], abs=1e-4)
        assert set(answer["ms"]) == {"stage1", "stage2", "total"} and all(v >= 0 for v in answer["ms"].values())
        for result in answer["results"]:  # a sparse stage one explains each result by its shared terms
            assert result["terms"] and all(isinstance(t, str) and w > 0 for t, w in result["terms"])
        assert query.reference not in [r["id"] for r in answer["results"]]


def test_a_benchmark_query_carries_its_ground_truth_and_the_target_rank_per_stage(client, local, val) -> None:
    query = val.queries[1]
    answer = client.post("/api/search", json={"reference": query.reference, "text": query.text, "k": 5,
                                              "query_id": query.id}).json()
    truth = answer["ground_truth"]
    assert truth["targets"] == val.targets[query.id] and truth["members"] == val.subsets[query.id]
    runs = local.run([query], depth=len(val.gallery))
    for stage, run in runs.items():
        assert truth["target_rank"][stage] == run[query.id].ids.index(val.targets[query.id][0]) + 1
    assert client.get(f"/api/query/{query.id}").json()["text"] == query.text


def test_rerank_equals_the_in_process_pipeline(client, local, val) -> None:
    query = val.queries[0]
    candidates = list(val.subsets[query.id])
    answer = client.post("/api/rerank", json={"reference": query.reference, "text": query.text,
                                              "candidates": candidates}).json()
    expected = local.rerank(query.reference, query.text, candidates)
    assert [r["id"] for r in answer["results"]] == [r.image_id for r in expected]


def test_images_thumbnails_and_the_gallery_listing(client, val) -> None:
    image_id = val.gallery.ids[0]
    full = client.get(f"/api/image/{image_id}")
    thumb = client.get(f"/api/image/{image_id}", params={"thumbnail": True})
    assert full.headers["content-type"] == "image/png" and full.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(thumb.content)).size[0] <= 160
    page = client.get("/api/gallery", params={"offset": 2, "limit": 5}).json()
    assert page == {"total": len(val.gallery), "ids": val.gallery.ids[2:7]}
    sample = client.get("/api/gallery", params={"random": True, "limit": 6, "seed": 1}).json()["ids"]
    assert len(set(sample)) == 6 and set(sample) <= set(val.gallery.ids)
    assert client.get("/").text.startswith("<!doctype html>")
    assert client.get("/static/app.js").status_code == 200


@pytest.mark.parametrize("image_id", ["no-such-image", "..", "%2e%2e%2fetc%2fpasswd", "..%2F..%2Fetc%2Fpasswd"])
def test_image_ids_only_resolve_to_gallery_entries(client, image_id) -> None:
    answer = client.get(f"/api/image/{image_id}")
    assert answer.status_code == 404 and "error" in answer.json()


@pytest.mark.parametrize("body, status, message", [
    ({"reference": "nope", "text": "red"}, 404, "image 'nope' is not in the gallery"),
    ({"text": "red"}, 422, "reference: Field required"),
    ({"reference": "REF", "text": "   "}, 422, "text is blank"),
    ({"reference": "REF", "text": "x" * 501}, 422, "over the limit of 500"),
    ({"reference": "REF", "text": "red", "k": 0}, 422, "k must be a whole number from 1"),
    ({"reference": "REF", "text": "red", "k": 101}, 422, "k must be a whole number from 1"),
    ({"reference": "REF", "text": "red", "k": "many"}, 422, "k:"),
    ({"reference": "REF", "text": "red", "query_id": "no-such-query"}, 404, "query 'no-such-query' is not a query"),
])
def test_search_refusals_are_4xx_with_a_json_message(client, val, body, status, message) -> None:
    body = {key: (val.gallery.ids[0] if value == "REF" else value) for key, value in body.items()}
    assert message in error_of(client.post("/api/search", json=body), status)


def test_rerank_refusals(client, val) -> None:
    ref = val.gallery.ids[0]
    assert "not in the gallery" in error_of(client.post("/api/rerank", json={"reference": ref, "text": "red",
                                                                              "candidates": ["nope"]}), 404)
    assert "more than once" in error_of(client.post("/api/rerank", json={"reference": ref, "text": "red",
                                                                          "candidates": [ref, ref]}), 422)
    assert "1 to 1000" in error_of(client.post("/api/rerank", json={"reference": ref, "text": "red", "candidates": []}), 422)
    assert "no such endpoint" in error_of(client.get("/api/nothing-here"), 404)


def test_upload_search_and_its_refusals(client, val) -> None:
    reference = val.gallery.ids[0]
    data = val.gallery.path(reference).read_bytes()
    answer = client.post("/api/search/upload", files={"image": ("ref.png", data)}, data={"text": "make it red", "k": 5})
    assert answer.status_code == 200 and len(answer.json()["results"]) == 5
    assert reference not in [r["id"] for r in answer.json()["results"]]  # the same image, uploaded, is still the reference
    assert "is not an image" in error_of(
        client.post("/api/search/upload", files={"image": ("notes.txt", b"hello")}, data={"text": "red"}), 415)
    assert "larger than the" in error_of(
        client.post("/api/search/upload", files={"image": ("big.png", b"\0" * (10 * 1024 * 1024 + 1))}, data={"text": "red"}), 413)
    bomb = png_bytes(Image.new("1", (8000, 8000)))  # 64M pixels in a few kB: refused from its header, never decoded
    assert "pixels" in error_of(client.post("/api/search/upload", files={"image": ("bomb.png", bomb)}, data={"text": "red"}), 413)
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpeg, format="JPEG")
    broken = jpeg.getvalue()[: len(jpeg.getvalue()) // 2]
    assert "could not be decoded" in error_of(
        client.post("/api/search/upload", files={"image": ("half.jpg", broken)}, data={"text": "red"}), 400)
    assert "text is blank" in error_of(
        client.post("/api/search/upload", files={"image": ("ref.png", data)}, data={"text": " "}), 422)


def test_concurrent_searches_all_succeed_and_answer_as_one_at_a_time(client, val, live_server) -> None:
    queries = val.queries[:8]
    serial = [client.post("/api/search", json={"reference": q.reference, "text": q.text, "k": 5}).json()["results"]
              for q in queries]

    def one(q):
        with httpx.Client(base_url=live_server.url, timeout=60) as c:
            return c.post("/api/search", json={"reference": q.reference, "text": q.text, "k": 5})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, queries * 2))
    assert all(a.status_code == 200 for a in answers)
    for i, answer in enumerate(answers):
        assert [r["id"] for r in answer.json()["results"]] == [r["id"] for r in serial[i % len(queries)]]


def test_the_bounded_load_test_runs_without_a_failed_request(live_server, val) -> None:
    """`cir loadtest`'s engine at a small count (the figures themselves belong to `cir loadtest`, not to a test)."""
    from cir.cli.serve import build_service
    from cir.serve.load import LoadSettings, run_load

    service = build_service(Config.load(live_server.config), None)
    result = run_load(service, LoadSettings(clients=8, searches=40, k=5, in_process=5))
    assert (result["searches"], result["failed"]) == (40, 0)
    for section in ("client", "server", "in_process"):
        assert result[section]["p95_ms"] >= result[section]["p50_ms"] > 0
    assert result["throughput_per_s"] > 0 and result["settings"]["gallery"] == len(val.gallery)


def test_the_curl_examples_of_docs_serve_md_run_against_the_live_server(live_server, val, tmp_path) -> None:
    import json
    import re
    import shlex
    import subprocess
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "serve.md").read_text()
    blocks = [text for info, text in re.findall(r"^```bash([^\n]*)\n(.*?)^```", page, re.S | re.M) if "skip=" not in info]
    lines = [line for text in blocks for line in text.splitlines() if line.startswith("curl ")]
    assert len(lines) >= 8
    (tmp_path / "my-photo.png").write_bytes(val.gallery.path(val.gallery.ids[0]).read_bytes())
    for line in lines:
        command = shlex.split(line.replace("http://127.0.0.1:8000", live_server.url))
        done = subprocess.run(["curl", "--fail-with-body", *command[1:]], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, f"{line}\n{done.stdout[:500]}{done.stderr[:500]}"
        if "-o" not in command:
            assert "error" not in json.loads(done.stdout), line
    assert (tmp_path / "thumbnail.png").read_bytes()[:4] == b"\x89PNG"
