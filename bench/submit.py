"""POST /api/jobs/generate: latency at 1 client and throughput at 8 clients, against a bare
DRF view doing one INSERT and one Celery send (bench/urls.py) on the same server, measured
in alternating rounds in the same run. Real uvicorn, Postgres and Redis; no worker runs, so
messages only queue up (in the bench's own Redis db).

    python -m bench.submit [--rounds 3] [--requests 400] [--seconds 4]
        [--servers uvicorn:1,uvicorn:2]
"""

from __future__ import annotations

import argparse
from typing import Any

from bench._support import BenchEnv, bench_env, machine, median, percentile, table
from bench.load import run_load

OURS = "/api/jobs/generate"
BARE = "/bench/bare"
BARE_NOAUTH = "/bench/bare-noauth"
TARGET_P50, TARGET_P99, TARGET_RATIO, TARGET_RPS_RATIO = 6.0, 10.0, 1.2, 0.9


def profile_queries(env: BenchEnv, token: str) -> dict[str, int]:
    """SQL statements per request of each endpoint, counted in-process."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    counts = {}
    for path in (OURS, BARE):
        client.post(path, {"prompt": "warm up"}, content_type="application/json")
        with CaptureQueriesContext(connection) as queries:
            response = client.post(path, {"prompt": "count"}, content_type="application/json")
        assert response.status_code in (200, 202), response.content
        counts[path] = len(queries)
    return counts


def run(
    *,
    rounds: int = 3,
    requests: int = 400,
    seconds: float = 4.0,
    servers: str = "uvicorn:1,uvicorn:2",
) -> list[dict[str, Any]]:
    results = []
    with bench_env() as env:
        users = env.users_with_tokens(64)
        tokens = [token for _, token in users]
        counts = profile_queries(env, tokens[0])
        print(f"SQL statements per request: ours {counts[OURS]}, bare view {counts[BARE]}")
        for spec in servers.split(","):
            server, workers = spec.split(":")
            web, base = env.start_web(workers=int(workers), server=server)
            port = int(base.rsplit(":", 1)[1])
            for path in (BARE, OURS, BARE_NOAUTH):
                run_load(port, path, tokens, clients=2, requests=100)  # warm every worker
            figures: dict[str, dict[str, list[float]]] = {
                path: {"p50": [], "p99": [], "rps": [], "p50_8": [], "p99_8": []}
                for path in (BARE, OURS, BARE_NOAUTH)
            }
            for _ in range(rounds):
                for path in (BARE, OURS, BARE_NOAUTH):
                    env.finish_pending_jobs()
                    one = run_load(port, path, tokens, clients=1, requests=requests)
                    eight = run_load(port, path, tokens, clients=8, seconds=seconds)
                    if one.errors or eight.errors:
                        raise RuntimeError(
                            f"{path}: {one.errors + eight.errors} failed requests\n"
                            f"{web.output()[-3000:]}"
                        )
                    f = figures[path]
                    f["p50"].append(percentile(one.latencies, 50) * 1000)
                    f["p99"].append(percentile(one.latencies, 99) * 1000)
                    f["rps"].append(eight.rps)
                    f["p50_8"].append(percentile(eight.latencies, 50) * 1000)
                    f["p99_8"].append(percentile(eight.latencies, 99) * 1000)
            env.stop(web)
            med = {path: {k: median(v) for k, v in f.items()} for path, f in figures.items()}
            ours, bare = med[OURS], med[BARE]
            result = {
                "server": spec, "ours": ours, "bare": bare, "bare_noauth": med[BARE_NOAUTH],
                "p50_ratio": ours["p50"] / bare["p50"], "rps_ratio": ours["rps"] / bare["rps"],
                "queries": counts,
            }  # fmt: skip
            results.append(result)
        rows = []
        for r in results:
            for label, key in (
                ("POST /api/jobs/generate", "ours"),
                ("bare view (INSERT + send)", "bare"),
                ("bare view, no auth", "bare_noauth"),
            ):
                f = r[key]
                rows.append([
                    r["server"], label, f"{f['p50']:.2f}", f"{f['p99']:.2f}", f"{f['rps']:.0f}",
                    f"{f['p50_8']:.1f} / {f['p99_8']:.1f}",
                ])  # fmt: skip
            rows.append([
                r["server"], "**ratio ours / bare**",
                f"{r['p50_ratio']:.2f}x (target <= {TARGET_RATIO})",
                f"{r['ours']['p99'] / r['bare']['p99']:.2f}x",
                f"{r['rps_ratio']:.2f}x (target >= {TARGET_RPS_RATIO})", "",
            ])  # fmt: skip
        table(
            f"Submit: medians of {rounds} rounds ({machine()}); "
            f"SQL per request: ours {counts[OURS]}, bare {counts[BARE]}",
            [
                "server:workers",
                "endpoint",
                "p50 1 client (ms)",
                "p99 1 client (ms)",
                "req/s 8 clients",
                "p50 / p99 8 clients (ms)",
            ],
            rows,
        )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--servers", default="uvicorn:1,uvicorn:2")
    args = parser.parse_args(argv)
    run(rounds=args.rounds, requests=args.requests, seconds=args.seconds, servers=args.servers)


if __name__ == "__main__":
    main()
