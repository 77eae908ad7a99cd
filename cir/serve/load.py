"""A bounded load test of `cir serve` on loopback: N concurrent clients, M searches in all, against the same indexed
pipeline measured in-process in the same run.

The server serialises inference (one lock), so a client's latency is its queue wait plus the search; the server's own
per-search time (measured inside the lock, reported with every answer) is what compares with in-process
`Pipeline.search`: the difference is HTTP, JSON and thread hand-off. Traffic goes to 127.0.0.1 only, and the loop is
bounded by the search count and a deadline.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bench.timing import latency_summary, seconds_per_call
from .service import SearchService


@dataclass
class LoadSettings:
    clients: int = 8
    searches: int = 500
    k: int = 10
    in_process: int = 100  # searches timed in-process, one at a time
    deadline_s: float = 600.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_load(service: SearchService, settings: LoadSettings = LoadSettings()) -> dict[str, Any]:
    """Time in-process searches, then serve the same service on a free loopback port and load it."""
    import httpx
    import uvicorn

    from .app import create_app

    queries = service.benchmark.queries if service.benchmark is not None else None
    if queries:
        work = [(q.reference, q.text) for q in queries]
    else:
        work = [(image_id, "make it red") for image_id in service.gallery.ids]
    local = seconds_per_call(lambda item: service.pipeline.search(item[0], item[1], k=settings.k),
                             work[: settings.in_process])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.05)
    jobs = [work[i % len(work)] for i in range(settings.searches)]
    client_seconds: list[float] = []
    server_ms: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + settings.deadline_s

    def client(share: list[tuple[str, str]]) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for reference, text in share:
                if time.monotonic() > deadline:
                    with lock:
                        failures.append("deadline passed")
                    return
                start = time.perf_counter()
                try:
                    answer = http.post("/api/search", json={"reference": reference, "text": text, "k": settings.k})
                    ok = answer.status_code == 200
                except httpx.HTTPError as exc:
                    ok, answer = False, exc
                elapsed = time.perf_counter() - start
                with lock:
                    if ok:
                        client_seconds.append(elapsed)
                        server_ms.append(answer.json()["ms"]["total"])
                    else:
                        failures.append(str(getattr(answer, "status_code", answer)))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=settings.clients) as pool:
        list(pool.map(client, [jobs[i :: settings.clients] for i in range(settings.clients)]))
    wall = time.perf_counter() - start
    server.should_exit = True
    thread.join(timeout=30)
    in_process = latency_summary(local)
    served = latency_summary(np.asarray(server_ms) / 1000.0) if server_ms else {}
    return {
        "settings": {**settings.__dict__, "gallery": len(service.gallery), "pipeline": repr(service.pipeline)},
        "searches": len(client_seconds), "failed": len(failures), "failures": failures[:5],
        "wall_s": wall, "throughput_per_s": len(client_seconds) / wall if wall else 0.0,
        "client": latency_summary(np.asarray(client_seconds)) if client_seconds else {},
        "server": served, "in_process": in_process,
        "server_p50_over_in_process": served.get("p50_ms", float("nan")) / in_process["p50_ms"],
    }
