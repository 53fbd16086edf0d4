import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("LOAS_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared LoAS data not found at {SHARED_DATA} (set LOAS_SHARED_DATA)")
    return SHARED_DATA


# Tests share 2 cores (and xdist runs 2 workers): one BLAS/OpenMP thread per process, set before
# numpy or torch are imported; a spinning 2-thread pool makes small products ~100x slower.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def loas(*args, cwd=None):
    """Run the `loas` command line as a user would (a subprocess) and return the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "loas.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)
