"""Cached answers at line rate: `wrk` against `retro serve` on loopback, the fast path on and off.

    .venv/bin/python -m benchmarks.cached_answers [--seconds 10] [--connections 64]

Registers a benchmark pair as benchmarks/serving.py does (2,000 generated passages, SmolLM2 with
a fresh LoRA), asks one question once so its answer sits in the L1 answer cache, then drives
`POST /v1/answer` with that question from Debian's `wrk` (apt-get install wrk; one client
thread, sharing the cores with the service) for --seconds, with `serve.cache.fast_path` true
and false, with 1 and 2 workers. Every response is checked to be a 200 (wrk counts others).

Prints a markdown table and writes benchmarks/results/cached_answers.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULTS = ROOT / "benchmarks" / "results" / "cached_answers.json"
LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, body: dict, seconds: int, connections: int, folder: Path) -> dict:
    script = folder / "post.lua"
    script.write_text(LUA.format(body=json.dumps(body)))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "qps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": percentiles.get("50"),
        "p99": percentiles.get("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def stop(service: subprocess.Popen) -> None:
    """Stop the service and its workers (killed when they take over 60 s to drain)."""
    service.terminate()
    try:
        service.wait(timeout=60)
    except subprocess.TimeoutExpired:
        service.kill()
        service.wait(timeout=30)


def main(argv: list[str] | None = None) -> list[dict]:
    from serving import register_pair, start_service

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--port", type=int, default=8766)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    folder = Path(tempfile.mkdtemp(prefix="retro-cached-bench-"))
    uri, questions = register_pair(folder, 2_000)
    body, url, rows = {"question": questions[0]}, f"http://127.0.0.1:{args.port}/v1/answer", []
    for workers in (1, 2):
        for fast in (True, False):
            service = start_service(
                folder, uri, args.port, workers, f"  cache:\n    fast_path: {str(fast).lower()}\n"
            )
            try:
                for _ in range(2 * workers):  # each worker computes the answer once, then holds it
                    assert httpx.post(url, json=body, timeout=120).status_code == 200
                row = {
                    "fast_path": fast,
                    "workers": workers,
                    **wrk(url, body, args.seconds, args.connections, folder),
                }
            finally:
                stop(service)
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.write_text(
        json.dumps({"connections": args.connections, "seconds": args.seconds, "rows": rows}, indent=2)
    )
    print("\n| fast path | workers | QPS | p50 | p99 | non-2xx |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {'on' if r['fast_path'] else 'off'} | {r['workers']} | {r['qps']:,.0f} | {r['p50']} "
            f"| {r['p99']} | {r['non_2xx']} |"
        )
    return rows


if __name__ == "__main__":
    main()
