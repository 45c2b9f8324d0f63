"""Bounded load test of `retro serve` on loopback: QPS and latency percentiles per request kind.

    .venv/bin/python benchmarks/serving.py                       # 10k-passage index, SmolLM2, 1 worker
    .venv/bin/python benchmarks/serving.py --passages 100000 --workers 2

Registers one adapter/index pair in a temporary MLflow store (the default base model with a fresh
LoRA adapter; latency does not depend on what the adapter learned, and an index of generated
passages with real MiniLM vectors, cached under benchmarks/.cache), starts the real service with
`retro serve` in its own process, and drives it from this process with a fixed number of
requests at a fixed concurrency over keep-alive HTTP/1.1 connections:

- cached answers (one question asked again and again: the L1 answer cache),
- /v1/retrieve with distinct questions (query embedding + hybrid search, nothing cached),
- full answers with distinct questions (retrieval + generation with the default model),
- streaming answers: time to first token, for new questions and again for the same questions,
  whose passages' key/values the service then holds (serve.cache.prefix_entries).

With `--fusion kv` the adapter reads its chunks as key/values (README "The chunk key/value
store"): streaming is timed for new chunks (computed now), then, after the service is restarted
(RAM empty), for the same questions with their chunks in the disk tier (`serve.chunk_kv_folder`),
then once more with them in RAM. `--fusion in_context,kv` runs both, one after the other, on the
same index and questions. `--embed-backend torch,onnx-int8` runs the cases once per query
embedding engine (README "Embedding engines"); `--retrieve-only` stops after /v1/retrieve.
`--generator-engine torch,llamacpp` runs them once per `serve.engine` (README "Serving engines"; `torch-int8`
is the torch engine with `serve.torch.decode_weights: int8`);
`--answers-only` times only uncached answers, at c=1 and c=8, with the L1 and prefix caches off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def register_pair(
    folder: Path, passages: int, fusion: str = "in_context", engine: str = "torch"
) -> tuple[str, list[str]]:
    """A fresh LoRA on the default model (with `fusion`) and an index of `passages` generated
    passages whose queries the embedding `engine` encodes, registered and aliased `champion`;
    returns the tracking URI and questions about indexed passages."""
    from retrieval import corpus

    from components.adapters.base_model import DEFAULT_BASE_MODEL, load_base_model
    from components.adapters.builder import build_retro_model
    from components.core.paths import Paths
    from components.registry import mlflow_registry as reg
    from components.stages import register
    from components.stages.entry import execute
    from components.stores.manifest import IndexManifest
    from components.stores.retriever import Retriever

    rows, vectors, questions = corpus(passages, 2_000)
    layout = Paths(folder)
    payloads = [{"doc_id": r["doc_id"], "domain": r["domain"]} for r in rows]
    store = {"factory": "HNSW32", "index_params": "efConstruction=200,efSearch=128"}
    retriever = Retriever.build(
        [r["id"] for r in rows],
        [r["text"] for r in rows],
        vectors,
        payloads,
        "all-MiniLM-L6-v2",
        store="faiss",
        store_params=store,
    )
    retriever.embed_backend = engine  # the passages keep their torch vectors: queries as a user switching
    retriever.save(layout.index)
    IndexManifest(
        content_hash=f"serving-bench-{passages}",
        embedder="all-MiniLM-L6-v2",
        dim=int(vectors.shape[1]),
        count=len(rows),
        corpus_version="bench",
        store="faiss",
        retrieval_mode="hybrid",
        documents=len({r["doc_id"] for r in rows}),
        embed_backend=engine,
    ).write(layout.index)
    base, tokenizer = load_base_model(DEFAULT_BASE_MODEL)
    lora = {"r": 8, "lora_alpha": 16}
    model = build_retro_model(base, tokenizer, "lora", lora, {"fusion": fusion}, max_trainable_share=None)
    model.save(
        layout.current_adapter, {"base_model": DEFAULT_BASE_MODEL, "method": "lora", "retrieval": {"k": 3}}
    )
    layout.metrics.mkdir(parents=True, exist_ok=True)
    system = {"em": 0.5, "f1": 0.5, "latency_ms_mean": 0.0, "latency_ms_p95": 0.0}
    (layout.metrics / "evaluate.json").write_text(
        json.dumps(
            {
                "k": 3,
                "corpus_version": "bench",
                "questions": 0,  # no held-out questions: registered for a person to judge
                "base": {**system, "f1": 0.0},
                "rag": system,
                "adapter": system,
            }
        )
    )
    uri = f"sqlite:///{folder}/mlflow.db"
    result = execute("register", register.run, {"register": {"tracking_uri": uri}}, layout.root)
    if not result.get("registered"):
        raise RuntimeError(f"register refused the benchmark pair: {result}")
    reg.configure(uri).set_registered_model_alias(reg.ADAPTER_MODEL, "champion", result["adapter_version"])
    return uri, questions


class Connection:
    """One keep-alive HTTP/1.1 connection that posts JSON and reads whole responses."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    async def post(
        self, path: str, body: dict, first_byte_of: bytes | None = None
    ) -> tuple[int, bytes, float]:
        """(status, body, seconds until `first_byte_of` appeared, or until the end without it)."""
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        started = time.perf_counter()
        self.writer.write(head + payload)
        status_line = await self.reader.readline()
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        marked = None
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        else:  # chunked (streaming)
            data = b""
            while (size := int((await self.reader.readline()).strip(), 16)) > 0:
                data += await self.reader.readexactly(size)
                await self.reader.readline()
                if marked is None and first_byte_of and first_byte_of in data:
                    marked = time.perf_counter() - started
            await self.reader.readline()
        return (
            int(status_line.split()[1]),
            data,
            marked if marked is not None else time.perf_counter() - started,
        )

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, path: str, bodies: list[dict], concurrency: int, mark: bytes | None = None
) -> dict:
    """Send every body once with `concurrency` connections; QPS and latency percentiles."""
    queue = list(reversed(bodies))
    latencies: list[float] = []
    failures = 0

    async def worker() -> None:
        nonlocal failures
        connection = await Connection(port).open()
        while queue:
            status, _, seconds = await connection.post(path, queue.pop(), mark)
            latencies.append(seconds)
            failures += status != 200
        connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "requests": len(bodies),
        "concurrency": concurrency,
        "failed": failures,
        "qps": len(bodies) / wall,
        "p50": float(np.percentile(ms, 50)),
        "p95": float(np.percentile(ms, 95)),
        "p99": float(np.percentile(ms, 99)),
    }


def step_means(port: int) -> dict[str, float]:
    """Mean wall time of each step over the whole run, read from the service's /metrics."""
    import httpx

    sums, counts = {}, {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics").text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            if line.startswith(f"retro_step_seconds{suffix}"):
                into[line.split('"')[1]] = float(line.rsplit(" ", 1)[1])
    return {step: round(1000 * sums[step] / counts[step], 2) for step in sums if counts.get(step)}


def start_service(folder: Path, uri: str, port: int, workers: int, extra: str = "") -> subprocess.Popen:
    """`retro serve` on the pair registered in `folder`, ready; `extra`: more lines of the serve section."""
    (folder / "params.yaml").write_text(
        f"serve:\n  download_dir: {folder / 'serving'}\n  chunk_kv_folder: {folder / 'chunk_kv'}\n{extra}"
    )
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "components.cli",
        "serve",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--tracking-uri",
        uri,
        "--params",
        str(folder / "params.yaml"),
        "--log-level",
        "warning",
    ]
    service = subprocess.Popen(command, cwd=ROOT, env=env)
    import httpx

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return service
        except httpx.TransportError:
            pass
        if service.poll() is not None:
            raise RuntimeError("retro serve exited before it was ready")
        time.sleep(0.5)
    raise TimeoutError("service not ready in 600 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cached-requests", type=int, default=20_000)
    parser.add_argument("--retrieve-requests", type=int, default=500)
    parser.add_argument("--answer-requests", type=int, default=48)
    parser.add_argument("--fusion", default="in_context", help="in_context, kv, or both: in_context,kv")
    parser.add_argument(
        "--embed-backend", default="torch", help="query embedding engines, e.g. torch,onnx,onnx-int8"
    )
    parser.add_argument("--retrieve-only", action="store_true", help="cached answers and /v1/retrieve only")
    parser.add_argument(
        "--generator-engine",
        default="torch",
        help="serve.engine values to run, e.g. torch,llamacpp (torch-int8: serve.torch.decode_weights int8)",
    )
    parser.add_argument(
        "--answers-only",
        action="store_true",
        help="uncached answers only (c=1 and c=8), with the L1 and prefix caches off",
    )
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    tables = [
        ((fusion, engine, generator), bench(args, fusion, engine, generator))
        for fusion in args.fusion.split(",")
        for engine in args.embed_backend.split(",")
        for generator in args.generator_engine.split(",")
    ]
    for (fusion, engine, generator), rows in tables:
        print(
            f"\n{args.passages:,} passages (FAISS HNSW32, hybrid), queries embedded by {engine}, "
            f"SmolLM2-135M + LoRA r=8 on {generator}, fusion {fusion}, k=3, {args.workers} worker(s), "
            "client in this process"
        )
        print("| case | requests | concurrency | failed | QPS | p50 ms | p95 ms | p99 ms |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            print(
                f"| {row['case']} | {row['requests']:,} | {row['concurrency']} | {row['failed']} | "
                f"{row['qps']:,.1f} | {row['p50']:.2f} | {row['p95']:.2f} | {row['p99']:.2f} |"
            )


def bench(
    args: argparse.Namespace, fusion: str, engine: str = "torch", generator: str = "torch"
) -> list[dict]:
    """Every case against a service of a fresh pair with this fusion, query embedding engine and
    generator engine; one row each."""
    folder = Path(tempfile.mkdtemp(prefix="retro-serving-bench-"))
    uri, questions = register_pair(folder, args.passages, fusion, engine)
    engine_name, _, decode = generator.partition("-")  # torch-int8: the torch engine, int8 decode weights
    extra = f"  engine: {engine_name}\n" + (f"  torch:\n    decode_weights: {decode}\n" if decode else "")
    if args.answers_only:
        extra += "  cache:\n    l1_entries: 0\n    prefix_entries: 0\n"
    service = start_service(folder, uri, args.port, args.workers, extra)
    rows: list[dict] = []

    def run(label: str, path: str, bodies: list[dict], concurrency: int, mark: bytes | None = None) -> None:
        result = asyncio.run(drive(args.port, path, bodies, concurrency, mark))
        rows.append({"case": label, **result})
        print(f"{fusion} {engine} {generator} {label}: {json.dumps(rows[-1])}", flush=True)

    try:
        run("warm-up (not reported)", "/v1/answer", [{"question": q} for q in questions[:8]], 1)
        rows.clear()
        n, r, a = args.cached_requests, args.retrieve_requests, args.answer_requests
        if args.answers_only:
            distinct = iter(questions[8:])
            for c in (1, 8):
                bodies = [{"question": next(distinct)} for _ in range(a)]
                run(f"/v1/answer uncached, caches off, c={c}", "/v1/answer", bodies, c)
            return rows
        run("cached answer, c=64", "/v1/answer", [{"question": questions[0]}] * n, 64)
        run("cached answer, c=1", "/v1/answer", [{"question": questions[0]}] * (n // 10), 1)
        distinct = iter(questions[8:])
        run("/v1/retrieve uncached, c=1", "/v1/retrieve", [{"question": next(distinct)} for _ in range(r)], 1)
        run("/v1/retrieve uncached, c=8", "/v1/retrieve", [{"question": next(distinct)} for _ in range(r)], 8)
        if args.retrieve_only:
            return rows
        run("/v1/answer uncached, c=1", "/v1/answer", [{"question": next(distinct)} for _ in range(a)], 1)
        run("/v1/answer uncached, c=8", "/v1/answer", [{"question": next(distinct)} for _ in range(a)], 8)
        token = b"event: token"
        streams = [{"question": next(distinct), "stream": True} for _ in range(a)]
        if fusion == "in_context":
            run("stream: time to first token, c=1", "/v1/answer", streams, 1, mark=token)
            hot = streams[-12:] * 4  # passages of the last 12 questions are among the 16 kept prefixes
            run("stream, passages seen (prefix KV hit), c=1", "/v1/answer", hot, 1, mark=token)
        else:
            run(
                "stream: time to first token, chunks computed (miss), c=1",
                "/v1/answer",
                streams,
                1,
                mark=token,
            )
            print("mean ms per step (from /metrics):", step_means(args.port), flush=True)
            service.terminate()
            service.wait(timeout=30)
            service = start_service(folder, uri, args.port, args.workers)  # RAM empty, disk tier kept
            run("stream: first token, chunks from the disk tier, c=1", "/v1/answer", streams, 1, mark=token)
            run("stream: first token, chunks in RAM, c=1", "/v1/answer", streams, 1, mark=token)
        print("mean ms per step (from /metrics):", step_means(args.port), flush=True)
    finally:
        service.terminate()
        service.wait(timeout=30)
    return rows


if __name__ == "__main__":
    main()
