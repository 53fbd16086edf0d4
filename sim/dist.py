"""The execution layer of sweeps and multi-workload comparisons: Dask distributed, and a result store.

:func:`engine` yields a ``distributed.Client``: by default on an embedded ``LocalCluster`` (one
single-threaded worker process per core, on 127.0.0.1, no dashboard); given a scheduler address
(``--scheduler`` or the ``LOAS_SCHEDULER`` environment variable), on that cluster. Everything after
that -- scattering operands, submitting points, progress, failures -- is the same code in both cases.
Workers import this project (``sim``, and ``models`` for the SNASNet search) and must run the same
code as the client: the engine compares :func:`code_version` of the packages a run uses on every
worker and refuses a mismatch.

:class:`ResultStore` keeps one small Parquet file per finished point under the report directory,
named by the point's key (a hash of workload content, configuration, designs and code version), so
a rerun skips finished points and a killed sweep loses only the points that were in flight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sim.errors import UserError

SCHEDULER_ENV = "LOAS_SCHEDULER"
WORKER_WAIT_S = 60.0  # how long a given cluster may take to show its first worker
_ROOT = Path(__file__).resolve().parent.parent


def default_workers() -> int:
    """Worker processes of the embedded cluster: one per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_CODE_VERSIONS: dict = {}


def code_version(*packages: str) -> str:
    """sha256 (16 hex digits) of the source (``<package>/*.py``) of ``packages`` (default: ``sim``,
    the simulator): part of every result key, so changed code never reuses stale results, and
    compared on every worker of a cluster."""
    packages = packages or ("sim",)
    if packages not in _CODE_VERSIONS:
        h = hashlib.sha256()
        for pkg in packages:
            for p in sorted((_ROOT / pkg).glob("*.py")):
                h.update(f"{pkg}/{p.name}".encode() + b"\0" + p.read_bytes() + b"\0")
        _CODE_VERSIONS[packages] = h.hexdigest()[:16]
    return _CODE_VERSIONS[packages]


def digest(*parts: Any) -> str:
    """A stable sha256 (32 hex digits) of numpy arrays, dataclasses and JSON-able values."""
    h = hashlib.sha256()
    for part in parts:
        _feed(h, part)
    return h.hexdigest()[:32]


def _feed(h, x) -> None:
    if _is_tensor(x):  # a torch tensor (this module does not import torch): its values
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        h.update(f"nd{x.dtype.str}{x.shape}".encode())
        h.update(np.ascontiguousarray(x).tobytes())
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        h.update(type(x).__name__.encode())
        for f in dataclasses.fields(x):
            h.update(f.name.encode())
            _feed(h, getattr(x, f.name))
    elif isinstance(x, (list, tuple)):
        h.update(f"seq{len(x)}".encode())
        for v in x:
            _feed(h, v)
    elif isinstance(x, dict):
        h.update(f"map{len(x)}".encode())
        for k in sorted(x, key=str):
            h.update(str(k).encode() + b"=")
            _feed(h, x[k])
    else:
        h.update(json.dumps(x, sort_keys=True, default=str).encode())
    h.update(b";")


def _is_tensor(x) -> bool:
    return type(x).__module__.startswith("torch") and all(hasattr(x, a) for a in ("detach", "cpu", "numpy"))


def scheduler_address(arg: str | None) -> str | None:
    """The cluster to use: ``--scheduler`` wins over ``LOAS_SCHEDULER``; None = embedded cluster."""
    return arg or os.environ.get(SCHEDULER_ENV) or None


@contextlib.contextmanager
def engine(scheduler: str | None = None, workers: int | None = None, *, quiet: bool = False,
           packages: tuple = ("sim",)):
    """A ``distributed.Client`` on the cluster at ``scheduler``, or on an embedded ``LocalCluster``
    with ``workers`` processes (default :func:`default_workers`). Closed (and the embedded cluster
    shut down) on exit.

    Raises :class:`UserError` if the scheduler cannot be reached, shows no worker within
    ``WORKER_WAIT_S``, or a worker runs another version of ``packages`` (:func:`code_version`)."""
    from distributed import Client

    cluster = None
    if scheduler:
        if workers is not None:
            raise UserError("--workers: only for the embedded cluster; a cluster given by --scheduler "
                            "(or LOAS_SCHEDULER) has its own workers")
        if not quiet:
            print(f"connecting to the Dask scheduler at {scheduler} ...", file=sys.stderr, flush=True)
        import dask

        try:  # Dask's own connect timeout (distributed.comm.timeouts.connect, default 30 s)
            client = Client(scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except (OSError, TimeoutError, ValueError) as exc:
            raise UserError(f"--scheduler {scheduler}: cannot connect ({exc})") from None
    else:
        n = workers or default_workers()
        if n < 1:
            raise UserError(f"--workers: must be >= 1, got {n}")
        if not quiet:
            print(f"starting a local Dask cluster ({n} worker process{'es' * (n > 1)}) ...", file=sys.stderr,
                  flush=True)
        cluster = local_cluster(n)
        client = Client(cluster)
    try:
        if scheduler:
            try:
                client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            except TimeoutError:
                raise UserError(f"--scheduler {scheduler}: no worker connected within {WORKER_WAIT_S:g} s") from None
        _check_workers(client, scheduler, tuple(packages))
        client.run(adaptive_malloc)
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def local_cluster(workers: int):
    """The embedded cluster: ``workers`` single-threaded worker processes on 127.0.0.1, no dashboard
    (the scheduler's HTTP endpoint, which it always opens, on a free loopback port rather than on
    8787, which another cluster on this machine may hold)."""
    import dask
    from distributed import LocalCluster

    # Dask's nannies set MALLOC_TRIM_THRESHOLD_ for their workers, which switches off glibc's
    # adaptive mmap threshold: every large temporary (a layer's tensors) is then mmapped and
    # unmapped again, its pages faulted in afresh -- twice the CPU time of a SNASNet candidate.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                            silence_logs=logging.ERROR)


def adaptive_malloc() -> bool:
    """In a worker whose nanny set ``MALLOC_TRIM_THRESHOLD_`` (Dask's default for the workers of a
    ``dask worker`` command), set glibc's mmap and trim thresholds to the values its adaptive
    policy -- which that variable switches off -- reaches, so that large temporaries are reused
    rather than mapped and faulted in afresh each time. True if it changed them (Linux only)."""
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") is None:
        return False
    return _malloc_thresholds(32 << 20, 64 << 20)


def _malloc_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """glibc's ``mallopt`` mmap and trim thresholds; True if both were accepted (Linux/glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes) and libc.mallopt(M_TRIM_THRESHOLD, trim_bytes))
    except (OSError, AttributeError):
        return False


#: glibc's mmap threshold for :func:`keep_large_blocks`: blocks below it come from the heap and are
#: reused when freed. 1 GiB holds every tensor of a SNASNet scored at batch 256.
LARGE_BLOCK_BYTES = 1 << 30


def keep_large_blocks() -> bool:
    """Make glibc serve allocations up to :data:`LARGE_BLOCK_BYTES` from its heap and keep freed
    memory (mmap threshold 1 GiB, trim threshold 2 GiB), for a process that allocates and frees
    the same large tensors over and over (a search scoring one candidate after another).

    Without it every tensor above glibc's adaptive threshold (at most 32 MiB: a C = 32 SNASNet's
    down-sampling layer at batch 64, every layer at batch 256) is mapped and unmapped again and its
    pages faulted in afresh on each use: 170 k page faults and a quarter of a candidate's time. The
    cost is that the process keeps its peak memory. Process-wide and idempotent; True if glibc
    accepted both settings (False elsewhere than Linux/glibc, which keep their defaults)."""
    return _malloc_thresholds(LARGE_BLOCK_BYTES, 2 * LARGE_BLOCK_BYTES - 1)


def _check_workers(client, scheduler, packages=("sim",)) -> None:
    mine = code_version(*packages)
    theirs = client.run(code_version, *packages)
    bad = {w: v for w, v in theirs.items() if v != mine}
    if bad:
        w, v = next(iter(bad.items()))
        raise UserError(f"--scheduler {scheduler}: worker {w} runs {'/'.join(packages)} code {v}, this client {mine} "
                        f"(start the workers from this checkout, e.g. with PYTHONPATH set to it)")


@dataclasses.dataclass(frozen=True, eq=False)
class Shared:
    """A task argument (e.g. a layer's operands) sent to the cluster once, as scattered data, and
    shared by every task that holds this same object."""

    value: Any


@dataclasses.dataclass(frozen=True)
class Task:
    """One point: ``fn(*args)`` on a worker. ``key`` names its result (in the store and on the
    cluster); ``label`` (JSON-able) says which point it is when it fails."""

    key: str
    fn: Callable
    args: tuple
    label: dict


@dataclasses.dataclass
class Outcome:
    """What :func:`run` did: ``results`` maps key -> result (computed now or read from the store),
    ``failures`` lists ``{"label", "error"}`` per failed point; ``stopped``: a result made ``stop``
    end the run, the points still outstanding then were cancelled."""

    results: dict
    failures: list
    computed: int
    cached: int
    seconds: float
    stopped: bool = False


def run(client, tasks: list[Task], *, store: "ResultStore | None" = None, progress: bool = True,
        desc: str = "points", stop: "Callable[[str, Any], bool] | None" = None) -> Outcome:
    """Run every task not already in ``store`` on the cluster, each result stored as soon as it arrives.
    A task that raises is reported on stderr with its label and does not stop the others.
    ``stop(key, result)``, called for each fresh result: True cancels the points still outstanding
    (the results that arrived with that one are kept and stored) and ends the run."""
    from distributed import as_completed
    from tqdm import tqdm

    t0 = time.perf_counter()
    results, failures, stopped = {}, [], False
    todo = []
    for t in tasks:
        if store is not None and t.key in store:
            continue
        todo.append(t)
    cached = len({t.key for t in tasks}) - len({t.key for t in todo})
    by_key = {}
    for t in todo:
        by_key.setdefault(t.key, t)
    bar = tqdm(total=len(by_key) + cached, initial=cached, desc=desc, unit="pt", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    if by_key:
        shared = list({id(a): a for t in by_key.values() for a in t.args if isinstance(a, Shared)}.values())
        if shared and progress:
            bar.set_postfix_str(f"sending {len(shared)} operand sets to the workers")
        # On every worker: a worker lost with the only copy would cancel every point that needs it.
        scattered = dict(zip(map(id, shared), client.scatter([s.value for s in shared], broadcast=True))) \
            if shared else {}
        bar.set_postfix_str("")
        futs = [client.submit(t.fn, *[scattered[id(a)] if isinstance(a, Shared) else a for a in t.args],
                              key=f"loas-{desc}-{k}", pure=False) for k, t in by_key.items()]
        # Batches: whatever finished since the last look, so that many short points cost one store
        # write, while a point that takes a while is still stored the moment it is done.
        for batch in as_completed(futs, with_results=True, raise_errors=False).batches():
            done = {}
            for fut, res in batch:
                k = fut.key[len(f"loas-{desc}-"):]
                if fut.status == "finished":
                    done[k] = res
                else:  # raised ((type, exc, tb)) or cancelled (e.g. all its workers lost)
                    exc = res[1] if isinstance(res, tuple) else res
                    label, err = by_key[k].label, f"{type(exc).__name__}: {exc}"
                    failures.append({"label": label, "error": err})
                    bar.write(f"loas: {desc}: point {_fmt_label(label)} failed: {err}", file=sys.stderr)
                fut.release()
            if done and store is not None:
                store.put_many(done)
            results.update(done)
            bar.update(len(batch))
            if stop is not None and any(stop(k, r) for k, r in done.items()):
                stopped = True
                client.cancel([f for f in futs if not f.done()])
                break
    bar.close()
    if store is not None:  # every result, fresh or not, as the store's files have it
        again = ResultStore(store.dir)
        results = again.get_many([k for k in dict.fromkeys(t.key for t in tasks) if k in again])
    computed = len(by_key) - len(failures) if not stopped else len([k for k in by_key if k in results])
    return Outcome(results, failures, computed, cached, time.perf_counter() - t0, stopped)


def run_tasks(tasks: list[Task], *, store: "ResultStore | None" = None, scheduler: str | None = None,
              workers: int | None = None, progress: bool = True, desc: str = "points",
              packages: tuple = ("sim",), stop: "Callable[[str, Any], bool] | None" = None) -> Outcome:
    """:func:`run` on the engine of :func:`engine`; started only when some task is not in ``store``
    (the embedded cluster with no more workers than tasks to run). ``packages``: the code the tasks
    run, checked on every worker (:func:`code_version`); ``stop``: as for :func:`run`."""
    scheduler = scheduler_address(scheduler)
    todo = len({t.key for t in tasks if store is None or t.key not in store})
    if not todo:
        return run(None, tasks, store=store, progress=progress, desc=desc)
    if not scheduler and workers is None:
        workers = min(default_workers(), todo)
    with engine(scheduler, workers, quiet=not progress, packages=packages) as client:
        return run(client, tasks, store=store, progress=progress, desc=desc, stop=stop)


def _fmt_label(label: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in label.items())


class ResultStore:
    """Finished points in Parquet files under ``directory``: each file one batch of points (a key
    column and the points' flat results: int, float, str, bool), written atomically through the
    trace writer's temp-file-then-rename, never changed afterwards. A killed run leaves whole
    files only; runs writing the same store at once write different files."""

    def __init__(self, directory):
        import pyarrow.parquet as pq

        self.dir = Path(directory)
        self._rows = {}
        for f in sorted(self.dir.glob("*.parquet")) if self.dir.is_dir() else ():
            for row in pq.read_table(f).to_pylist():
                self._rows[row.pop("key")] = row

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def put_many(self, rows: dict) -> Path:
        """Write ``{key: row}`` as one new file; returns its path."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from sim.atomic import write_file

        table = pa.Table.from_pylist([{"key": k, **r} for k, r in rows.items()])
        path = self.dir / f"{digest(sorted(rows), time.time_ns(), os.getpid())}.parquet"
        write_file(path, lambda f: pq.write_table(table, f))
        self._rows.update(rows)
        return path

    def get_many(self, keys: list[str]) -> dict:
        return {k: dict(self._rows[k]) for k in keys}

    def items(self):
        """Every stored ``(key, row)`` (for results found by a field of the row rather than by key)."""
        return [(k, dict(r)) for k, r in self._rows.items()]
