"""The random-layer regression at benchmark size: `loas rtl regress --count 10000 --seed 0` (five
RTL builds, every output word and fiber against the golden model, every cycle count against the
timing model), resumable in build/regress10k; records the count and the mismatches in
bench/results/rtl_regress.json (also how many ran, when a run was stopped before the end).

Usage: python bench/rtl_regress.py [--count N] [--seed S] [--record-only]
--record-only writes the record of the layers run so far without running more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--record-only", action="store_true")
    args = ap.parse_args()
    out = ROOT / "build" / "regress10k"
    cmd = ["loas", "rtl", "regress", "--count", str(args.count), "--seed", str(args.seed), "--out", str(out.relative_to(ROOT))]
    rc = 0
    if not args.record_only:
        rc = subprocess.call([sys.executable, "-m", "loas.cli", *cmd[1:]], cwd=ROOT)
    summ = out / "summary.json"
    s = json.loads(summ.read_text()) if summ.exists() else {}
    # The layers in the store, which a killed run leaves current to its last finished chunk.
    sys.path.insert(0, str(ROOT))
    from hw.regress import REGRESS_BUILDS, build_key, stored_records

    n = len(REGRESS_BUILDS)
    want = [args.count // n + (i < args.count % n) for i in range(n)]
    stored = stored_records(out / "store", [build_key(args.seed, "verilator", p) for p in REGRESS_BUILDS], want)
    recs = [r for rs in stored for r in rs]
    if not recs:
        print(f"no regression results in {out / 'store'}")
        return 1
    s.update({"seed": args.seed, "count": args.count, "layers": len(recs), "pass": sum(r["pass"] for r in recs),
              "mismatches": sum(not r["pass"] for r in recs),
              "outputs_checked": sum(r["outputs_checked"] for r in recs), "sim_cycles": sum(r["sim_cycles"] for r in recs),
              "sim_s": round(sum(r["sim_s"] for r in recs), 1), "per_build": [len(rs) for rs in stored],
              "complete": all(len(rs) == w for rs, w in zip(stored, want)) and all(r["pass"] for r in recs)})
    rec = {k: s[k] for k in ("seed", "count", "layers", "pass", "mismatches", "outputs_checked", "sim_cycles",
                             "sim_s", "per_build", "complete", "builds", "capacity") if k in s}
    rec["command"] = " ".join(cmd) + "  (resumes where it stopped)"
    rec["recorded"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if "failure" in s:
        rec["failure"], rec["reproducer"] = s["failure"], s.get("reproducer")
    dst = ROOT / "bench" / "results" / "rtl_regress.json"
    dst.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"{rec['layers']} of {rec['count']} random layers, {rec['mismatches']} mismatches; wrote {dst}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
