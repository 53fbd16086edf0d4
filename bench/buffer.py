"""Bank conflicts of the global buffer (sim/buffer.py, cycle-exact against hw/buffer.py): the
default chip's buffer (16 banks x 256 lines x 512 bits, 17 read requesters, one write port) under
access patterns of the integration plan (hw/README.md "Global buffer"), line- and block-interleaved,
and the model's speed.

Usage: .venv/bin/python bench/buffer.py [--requests N] [--seed S]
Writes bench/results/buffer.json and bench/results/buffer.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.buffer import buffer_timing  # noqa: E402
from sim.params import BufferParams, ChipParams  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def scenarios(bp: BufferParams, n: int, rng):
    """name -> (what, reads, writes): R read streams and the write stream of (earliest, line)."""
    R, L = bp.requesters, bp.lines
    zeros = np.zeros(n, dtype=np.int64)
    none = (np.zeros(0, dtype=np.int64),) * 2

    def sweep(start):
        return (start + np.arange(n)) % L

    def every(k):  # earliest cycles k apart on average (geometric gaps), from cycle 0
        return np.cumsum(rng.geometric(1 / k, n)) - 1

    lanes = R - 1
    out = {
        "random_full": ("every requester a random line every cycle", [(zeros, rng.integers(0, L, n)) for _ in range(R)],
                        none),
        "one_bank": ("every requester a different line of bank 0 every cycle",
                     [(zeros, rng.integers(0, bp.lines_per_bank, n) * (bp.banks if bp.interleave == "line" else 1))
                      for _ in range(R)], none),
        "broadcast": ("every requester the same sweep (lockstep B fiber read by all)", [(zeros, sweep(0))] * R, none),
        "plan": (f"{lanes} lanes a random line every 4 cycles (spike words); the B stager and the fetch "
                 "unit each sweeping lines back to back",
                 [(every(4), rng.integers(0, L, n)) for _ in range(lanes)] + [(zeros, sweep(0))],
                 (zeros, sweep(L // 2 + 7))),
        "plan_busy": (f"{lanes} lanes a random line every cycle; the B stager and the fetch unit sweeping",
                      [(zeros, rng.integers(0, L, n)) for _ in range(lanes)] + [(zeros, sweep(0))],
                      (zeros, sweep(L // 2 + 7))),
    }
    return out


def measure(bp, reads, writes) -> dict:
    t0 = time.process_time()
    t = buffer_timing(bp, reads, writes)
    cpu = time.process_time() - t0
    n_req = sum(len(a) for _, a in reads) + len(writes[1])
    served = lambda g: len(g) / (g.max() + 1) if len(g) else 0.0  # noqa: E731 (requests per cycle until its last)
    return {"cycles": t.cycles, "requests": n_req, "bank_reads": t.bank_reads, "merged_reads": t.merged_reads,
            "writes": t.writes, "read_stalls": int(t.read_stalls.sum()), "write_stalls": t.write_stalls,
            "stall_per_read": round(float(t.read_stalls.sum()) / max(1, sum(len(g) for g in t.read_grant)), 3),
            "bank_utilization": round((t.bank_reads + t.writes) / (bp.banks * max(1, t.cycles)), 3),
            "lane_reads_per_cycle": round(float(np.mean([served(g) for g in t.read_grant[:-1]])), 3),
            "last_requester_per_cycle": round(served(t.read_grant[-1]), 3),
            "writes_per_cycle": round(served(t.write_grant), 3), "model_cpu_s": round(cpu, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=4000, help="requests per stream (default 4000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for interleave in ("line", "block"):
        bp = BufferParams.from_chip(ChipParams(), interleave=interleave)
        for name, (what, reads, writes) in scenarios(bp, args.requests, np.random.default_rng(args.seed)).items():
            rows.append({"scenario": name, "what": what, "interleave": interleave, **measure(bp, reads, writes)})
    cpu = sum(r["model_cpu_s"] for r in rows)
    speed = sum(r["requests"] for r in rows) / cpu
    bp = BufferParams.from_chip(ChipParams())
    cmd = "python bench/buffer.py" + (f" --requests {args.requests}" if args.requests != 4000 else "") + \
        (f" --seed {args.seed}" if args.seed else "")
    res = {"buffer": bp.__dict__, "requests_per_stream": args.requests, "seed": args.seed, "rows": rows,
           "model_requests_per_cpu_s": round(speed), "command": cmd}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "buffer.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# bench/buffer.py results", "",
             f"Global buffer {bp.banks} banks x {bp.lines_per_bank} lines x {bp.line_bits} bits, {bp.requesters} read "
             f"requesters + 1 write port; {args.requests} requests per stream, seed {args.seed}. "
             "Lane reads/cycle: mean over requesters 0..R-2 of requests per cycle until their last grant; "
             "last requester: the B stager's (requester R-1).", "",
             "| scenario | interleave | cycles | bank reads | merged | stall cycles per read | bank utilization | "
             "lane reads/cycle | last requester/cycle | writes/cycle |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scenario']}: {r['what']} | {r['interleave']} | {r['cycles']} | {r['bank_reads']} | "
                     f"{r['merged_reads']} | {r['stall_per_read']} | {r['bank_utilization']} | "
                     f"{r['lane_reads_per_cycle']} | {r['last_requester_per_cycle']} | {r['writes_per_cycle']} |")
    lines += ["", f"Model speed: {speed:,.0f} requests per CPU second over all rows ({cpu:.2f} CPU s).",
              f"Command: `{cmd}`"]
    (OUT / "buffer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
