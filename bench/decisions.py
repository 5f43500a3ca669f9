"""What decisions cost (issue 17): the daemon's CPU per message with two rules and a
transform on every queue, against the same run without them, on the same fast server (npm
`fauxqs`) in one run. Runs alternate (plain, decisions, plain, decisions, …) so the machine's
drift hits both; the ratio is of the medians.

    python -m bench.decisions [--messages 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics

from bench.fast import Run, start_fauxqs, throughput
from bench.redrive import ENV

# Two rules that never match (every message is evaluated against both) and a transform that
# rewrites every payload: the worst case of the "two rules and a transform".
DECISIONS = {
    "rules": [
        {"when": "body.amount > `10000`", "action": "park", "reason": "manual_review"},
        {"when": "attributes.ledger == 'maintenance'", "action": "defer", "delay_seconds": 60},
    ],
    "transform": "merge(body, {replayed: `true`})",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update({k: v for k, v in ENV.items() if k.startswith("AWS_")})
    server, url = start_fauxqs()
    try:
        print(f"decisions on fauxqs, {args.messages} messages, 4 DLQs -> 4 queues")
        head = f"{'tool':<14} {'messages':>8} {'msg/s':>9} {'req/msg':>9}"
        print(head + f" {'cpu ms/msg':>10} {'rss MB':>8}")
        plain: list[Run] = []
        decided: list[Run] = []
        run_id = 100
        for _ in range(args.rounds):
            for label, extra, runs in (("plain", None, plain), ("decisions", DECISIONS, decided)):
                run_id += 1
                run = asyncio.run(throughput(url, label, args.messages, run_id, extra))
                runs.append(run)
                print(run.row(), flush=True)

        def cpu(runs: list[Run]) -> float:
            return statistics.median(1000 * r.cpu / r.messages for r in runs)

        print(
            f"ratio: {cpu(decided) / cpu(plain):.2f}x CPU per message with two rules and a "
            f"transform ({cpu(decided):.3f} against {cpu(plain):.3f} ms, medians of "
            f"{args.rounds}); target <= 1.2x"
        )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
