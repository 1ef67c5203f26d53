"""A/B of callback ingestion: two source trees' services (main and a change, say) on one
database, in alternating rounds of load, each round's rate, server CPU per callback and p99.
These machines drift by ±20% within minutes, so a change is judged by how many rounds it wins
and by medians taken side by side, never by one run against another run made later.

    git worktree add /tmp/base main
    python bench/ab_callbacks.py /tmp/base . --rounds 6 --seconds 5
    python bench/ab_callbacks.py /tmp/base . --database sqlite --load python

Each tree serves through its own bench/bench_callbacks.py in child mode (so both must have
it), with 32 keep-alive connections of wrk (default) or the Python generator. Every request
is a genuine success result for its own pending payout; a round ends once the server has
applied what it answered, so its CPU covers the whole work, and the run fails unless every
answered result completed its payout. The figure is B's median rate and CPU per callback as a
ratio of A's, measured in the same run, with both servers' peak memory. All the payouts are
seeded first (2 x rounds x --callbacks): past a few hundred thousand they outgrow MariaDB's
default 128 MB buffer pool and each round runs slower than the last, for both trees alike.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_callbacks import (  # noqa: E402
    ServedApp,
    callback_requests,
    check_completed,
    completed_payouts,
    completions_settled,
    fresh_database,
    measure,
    medians,
    seed_pending_payouts,
)
from common import machine  # noqa: E402


def serve_tree(tree: Path, name: str, database_url: str, workdir: Path) -> ServedApp:
    script = tree / "bench" / "bench_callbacks.py"
    if not script.exists():
        raise SystemExit(f"{tree} has no bench/bench_callbacks.py to serve it")
    journal = str(workdir / f"{name}-journal.log")
    return ServedApp("app", database_url, journal, script=str(script))


def one_round(app: ServedApp, requests_: list, args, database_url: str, answered: int) -> dict:
    """Load `app` with `requests_`; its figures once the server has applied them too."""
    before = app.cpu_seconds()
    figures = measure(app, requests_, args)
    completions_settled(database_url, answered + figures["requests"])
    figures["cpu_ms"] = (app.cpu_seconds() - before) * 1000 / max(figures["requests"], 1)
    return figures


def run_rounds(servers: dict, ids: list, args, database_url: str) -> dict:
    results = {name: [] for name in servers}
    used = answered = 0
    for number in range(args.rounds):
        for name in ("A", "B") if number % 2 == 0 else ("B", "A"):
            batch = ids[used : used + args.callbacks]
            requests_ = callback_requests(batch, used)
            used += len(batch)
            figures = one_round(servers[name], requests_, args, database_url, answered)
            answered += figures["requests"]
            results[name].append(figures)
            print(
                f"round {number + 1} {name}: {figures['rate']:7.0f}/s  "
                f"{figures['cpu_ms']:.3f} ms CPU per callback  p99 {figures['p99_ms']:5.1f} ms  "
                f"errors {figures['errors']:.0f}",
                flush=True,
            )
    rounds = args.rounds * 2
    check_completed(args.database, answered, completed_payouts(database_url), args.load, rounds)
    return results


def summary(results: dict, servers: dict, trees: dict) -> None:
    by_tree = {}
    for name, runs in results.items():
        figures = by_tree[name] = medians(runs)
        print(
            f"{name} ({trees[name]}): median {figures['rate']:.0f}/s, {figures['cpu_ms']:.3f} ms "
            f"CPU per callback, p99 {figures['p99_ms']:.1f} ms (worst "
            f"{max(run['p99_ms'] for run in runs):.1f}), errors "
            f"{sum(run['errors'] for run in runs):.0f}, "
            f"server peak {servers[name].peak_mib():.0f} MiB"
        )
    wins = sum(b["rate"] > a["rate"] for a, b in zip(results["A"], results["B"], strict=True))
    print(
        f"B/A: rate {by_tree['B']['rate'] / by_tree['A']['rate']:.3f}, CPU per callback "
        f"{by_tree['B']['cpu_ms'] / by_tree['A']['cpu_ms']:.3f}; B faster in {wins} of "
        f"{len(results['A'])} rounds"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tree_a", type=Path)
    parser.add_argument("tree_b", type=Path)
    parser.add_argument("--database", choices=["mariadb", "sqlite"], default="mariadb")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5, help="time bound per round")
    parser.add_argument("--callbacks", type=int, default=20000, help="at most, per round")
    parser.add_argument("--load", choices=["python", "wrk"], default="wrk")
    args = parser.parse_args(argv)
    trees = {"A": args.tree_a.resolve(), "B": args.tree_b.resolve()}
    print(
        f"A/B callback ingestion, {args.rounds} rounds each, {args.load}, {args.database}; "
        f"{machine()}"
    )
    workdir = Path(tempfile.mkdtemp(prefix="ab-callbacks-"))
    database_url, drop = fresh_database(args.database, workdir)
    servers = {}
    try:
        ids = seed_pending_payouts(database_url, args.callbacks * args.rounds * 2)
        for name, tree in trees.items():
            servers[name] = serve_tree(tree, name, database_url, workdir)
        summary(run_rounds(servers, ids, args, database_url), servers, trees)
        return 0
    finally:
        for app in servers.values():
            app.stop()
        drop()


if __name__ == "__main__":
    sys.exit(main())
