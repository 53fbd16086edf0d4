"""`make bench`: run every benchmark script in bench/ and keep its results under bench/results/.

Each script writes its own JSON (and PNG where a plot helps) into bench/results/; results are
committed so speed and memory claims in the README can be checked against a command.
"""

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    scripts = sorted(p for p in HERE.glob("*.py") if p.name != "run.py")
    # Usage: python bench/run.py [NAME ...]  (NAME = script stem, e.g. golden sim rtl export)
    only = set(sys.argv[1:])
    failed = []
    for script in scripts:
        if only and script.stem not in only:
            continue
        print(f"== bench/{script.name}", flush=True)
        t0 = time.perf_counter()
        # -P: do not put bench/ first on sys.path, where bench/sim.py would shadow the sim package.
        rc = subprocess.call([sys.executable, "-P", str(script)], cwd=HERE.parent)
        print(f"   {'ok' if rc == 0 else f'FAILED rc={rc}'} in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
