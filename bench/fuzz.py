"""Fuzz at scale: >= 10 000 seeded mutants of every `loas` input format through the command line.

Usage: python -P bench/fuzz.py [N] [SEED]   (default 10 000 mutants, seed 0; run it niced)

The mutator and the contract are tests/fuzzing.py's (the suite's tests/test_fuzz.py runs 125):
exit 0, 1 or 2; no traceback; every call within 20 s; the good inputs unchanged. Writes
bench/results/fuzz.json: the count, exit codes, tracebacks (must be 0), slowest call, wall time;
failing mutants are kept under reports/fuzz-failures/ for a regression test.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main() -> int:
    from fuzzing import Fuzzer
    from tqdm import tqdm

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    tmp = Path(tempfile.mkdtemp(prefix="loas-fuzz-"))
    print(f"fuzzing {n} mutants (seed {seed}) in {tmp}", file=sys.stderr, flush=True)
    fz = Fuzzer(tmp, seed=seed, limit_s=20.0)
    t0 = time.perf_counter()
    for _ in tqdm(range(n), desc="fuzz", unit="mutant", mininterval=10.0):
        fz.case()
    wall = time.perf_counter() - t0
    r = fz.result
    res = {
        "machine": platform.machine(),
        "command": f"nice python -P bench/fuzz.py {n} {seed}",
        "mutants": r.cases,
        "by_target": r.by_target,
        "exit_codes": {str(k): v for k, v in sorted(r.codes.items())},
        "tracebacks": len(r.tracebacks),
        "slow_calls_over_20s": len(r.slow),
        "rewritten_inputs": len(r.rewritten_inputs),
        "good_inputs_unchanged": fz.good_unchanged(),
        "slowest_call_s": round(r.max_s, 3),
        "wall_s": round(wall, 1),
        "mutants_per_s": round(r.cases / wall, 1),
        "failures": [{"target": t, "argv": a, "rc": rc, "stderr_tail": e[-800:]} for t, a, rc, e in r.tracebacks[:20]],
    }
    if r.tracebacks:
        keep = ROOT / "reports" / "fuzz-failures"
        shutil.rmtree(keep, ignore_errors=True)
        shutil.copytree(tmp / "failures", keep)
    out = ROOT / "bench" / "results" / "fuzz.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({k: v for k, v in res.items() if k != "failures"}, indent=2))
    ok = not (r.tracebacks or r.slow or r.rewritten_inputs) and res["good_inputs_unchanged"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
