"""What the native-speed testbench runs (tests/cocotb/native_tb.py): :class:`Case` s from a
workload (``workload_cases``) or drawn at random (``random_cases``, the regression of
``loas rtl regress``), the builds the regression spreads them over (:data:`REGRESS_BUILDS`), and
the reproducer of a failing random layer (:func:`write_reproducer`, a trace workload), and the
regression's tasks on the Dask engine of sim/dist.py (:func:`run_chunk`, one chunk of layers on one
build; :func:`plan_chunks`, the chunks still to run; :func:`stored_records`, what the result store
holds).

Random layers (:func:`draw_layer`, reproducible from (seed, index) alone): M, N from 1 to a few
hundred and K from 1 to several chunks (log-uniform, so most are small and some are large; K is
rarely a multiple of the chunk), spike and weight densities uniform over 0..1 on both sides, with
all-silent rows and all-zero weight columns mixed in, n_mask 0/1, random LIF, bias, load idle
cycles and output backpressure. T, P and the TPPE options are the build's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.golden import LIFParams
from sim.params import SHARED, Capacity, CoreParams


@dataclass
class Case:
    """One layer run: operands, LIF and compression settings, testbench randomness, labels."""

    name: str
    words: np.ndarray
    weights: np.ndarray
    bias: np.ndarray
    lif: LIFParams
    n_mask: int
    idle: float = 0.0
    backpressure: float = 0.0
    seed: int = 0
    meta: dict = field(default_factory=dict)


def workload_cases(workload: str, items, idle: float = 0.0, backpressure: float = 0.0,
                   seed: int = 1) -> "iter[Case]":
    """Cases of (layer, sample) pairs of a workload (name or path), with the testbench's load idle
    and output backpressure probabilities."""
    from sim.trace import load_workload

    wl = load_workload(workload)
    for i, (name, sample) in enumerate(items):
        layer = wl.layer(name)
        yield Case(f"{name}/{sample}", layer.words(sample), layer.weights_kn(), layer.bias, layer.lif,
                   layer.n_mask, idle=idle, backpressure=backpressure, seed=seed + i,
                   meta={"layer": name, "sample": int(sample)})


#: Capacity of every regression build: the shared build's (sim.params.SHARED), so that build 0 is
#: also the one `loas rtl sim` makes for a 2-lane config and build 4 the paper configuration's.
REGRESS_CAP = SHARED
#: The regression's builds: T from 1 to 16, both schedules, lookahead 1..4, FIFO depth, result
#: slots, laggy adders, row prefetch and segment cache on and off, 2 to 16 lanes.
REGRESS_BUILDS = [
    CoreParams(pes=2),
    CoreParams(pes=3, timesteps=16, schedule="dynamic", lookahead=2, result_slots=2, fifo_depth=4),
    CoreParams(pes=2, timesteps=1, lookahead=1, result_slots=1, laggy_adders=32, row_prefetch=False),
    CoreParams(pes=5, timesteps=7, schedule="dynamic", lookahead=3, fifo_depth=2, laggy_adders=8,
               seg_cache=False, row_prefetch=False),
    CoreParams(),
]


def _logu(rng, lo: int, hi: int) -> int:
    return int(np.exp(rng.uniform(np.log(lo), np.log(hi + 1)))) if hi > lo else lo


def draw_layer(seed: int, index: int, params: CoreParams, cap: Capacity = REGRESS_CAP) -> Case:
    """Random layer ``index`` of regression ``seed`` for a build ``params`` (see the module doc)."""
    rng = np.random.default_rng([seed, index, params.timesteps, params.pes])
    T = params.timesteps
    M, N = _logu(rng, 1, cap.rows), _logu(rng, 1, cap.cols)
    K = _logu(rng, 1, cap.k)
    if rng.random() < 0.05:
        K = params.chunk_bits * int(rng.integers(1, cap.k // params.chunk_bits + 1))  # a whole number of chunks
    da, db = rng.random(), rng.random()
    # The packed operands must fit the build: thin out a dense draw of a large layer.
    da = min(da, cap.a_nnz / (M * K))
    db = min(db, cap.b_nnz / (K * N))
    words = rng.integers(1, 1 << T, size=(M, K), dtype=np.uint16)
    words[rng.random((M, K)) >= da] = 0
    words[rng.random(M) < rng.choice([0.0, 0.3, 1.0], p=[0.6, 0.3, 0.1])] = 0  # all-silent rows
    weights = rng.integers(-128, 128, size=(K, N)).astype(np.int8)
    weights[rng.random((K, N)) >= db] = 0
    weights[:, rng.random(N) < rng.choice([0.0, 0.3, 1.0], p=[0.6, 0.3, 0.1])] = 0  # all-zero columns
    # The thinned density bounds the mean count only: drop the surplus of a draw above capacity.
    for arr, limit in ((words, cap.a_nnz), (weights, cap.b_nnz)):
        nz = np.flatnonzero(arr)
        if nz.size > limit:
            arr.flat[rng.choice(nz, nz.size - limit, replace=False)] = 0
    bmax = 1 << int(rng.integers(0, cap.bias_bits))
    bias = rng.integers(-bmax, bmax, size=N).astype(np.int64)
    # A threshold around a typical current gives a mix of firing and silent outputs.
    typical = max(1.0, K * da * db * 64 + bmax / 2)
    lif = LIFParams(max(1, int(typical * rng.uniform(0.05, 2.0))), int(rng.integers(1, 5)))
    idle = float(rng.choice([0.0, rng.uniform(0, 0.8)]))
    bp = float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0, 0.7)]))
    return Case(f"r{seed}.{index}", words, weights, bias, lif, int(rng.integers(0, 2)), idle=idle,
                backpressure=bp, seed=int(rng.integers(1, 1 << 31)),
                meta={"seed": seed, "index": index, "M": M, "K": K, "N": N})


def random_cases(seed: int, start: int, count: int, params: dict, cap: dict) -> "iter[Case]":
    p, c = CoreParams(**params), Capacity(**cap)
    for i in range(start, start + count):
        yield draw_layer(seed, i, p, c)


SOURCES = {"workload": workload_cases, "random": random_cases}


def save_json(path, obj) -> None:
    """Write a regression record (state, summary) atomically (sim/atomic.py)."""
    import json

    from sim.atomic import write_file

    write_file(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_jsonl(path, records) -> None:
    """Write ``records`` as JSON lines atomically (a build's regression records, for reading)."""
    import json

    from sim.atomic import write_file

    write_file(path, "".join(json.dumps(r) + "\n" for r in records).encode())


def cases(source: dict, params: CoreParams, cap: Capacity):
    """The cases a testbench run's ``source`` (JSON: ``kind`` and that source's arguments) names."""
    kw = {k: v for k, v in source.items() if k != "kind"}
    if source["kind"] == "random":
        import dataclasses

        kw["params"], kw["cap"] = dataclasses.asdict(params), dataclasses.asdict(cap)
    return SOURCES[source["kind"]](**kw)


def write_reproducer(directory, case: Case, params: CoreParams, command: str):
    """Write ``case`` as a one-layer trace workload ``directory`` (layer ``layer``; its golden output
    words as ``expected_out_words``) and a ``README`` with ``command``; return the directory."""
    import dataclasses
    from pathlib import Path

    from sim.atomic import write_file
    from sim.golden import run_layer
    from sim.trace import Geometry, im2col, write_layer, write_manifest

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    M, K = case.words.shape
    N = case.weights.shape[1]
    g = Geometry(c_in=K, h=M, w=1, kernel=1, stride=1, padding=0, c_out=N)  # im2col: row m = pixel m
    spikes = np.ascontiguousarray(case.words.T.reshape(1, K, M, 1))
    assert np.array_equal(im2col(spikes[0], g), case.words)
    T = params.timesteps
    gold = run_layer(case.words, case.weights, case.bias, case.lif, T, n_mask=case.n_mask).out_words
    write_layer(d / "layer.npz", T=T, geometry=g, spike_words=spikes,
                weight=np.ascontiguousarray(case.weights.T.reshape(N, K, 1, 1)), bias=case.bias,
                lif=case.lif, n_mask=case.n_mask, expected_out_words=gold[None])
    write_manifest(d, name=d.name, T=T, layers=[("layer", "conv")],
                   provenance={"model": "loas rtl regress", "dataset": "random", "checkpoint_sha256": None,
                               "command": command, "case": case.name, "params": dataclasses.asdict(params),
                               "idle": case.idle, "backpressure": case.backpressure, "tb_seed": case.seed})
    write_file(d / "README", f"{case.name}: {command}\n".encode())
    return d


# The regression on the Dask engine (sim/dist.py) -------------------------------------------------
#: The code a regression result depends on (the RTL, the testbench and its scoreboard, the golden
#: and timing models): part of every result key and checked on every worker.
REGRESS_CODE = ("sim", "hw", "tests/cocotb")


def build_key(seed: int, simulator: str, params: CoreParams, cap: Capacity = REGRESS_CAP) -> str:
    """The name of regression ``seed``'s layers on one build in the result store: changed code
    (:data:`REGRESS_CODE`) or another build, capacity, seed or simulator never reuses a result."""
    from sim.dist import code_version, digest

    return digest("loas rtl regress", seed, simulator, params, cap, code_version(*REGRESS_CODE))


def stored_records(store, bkeys: "list[str]", per: "list[int]") -> "list[list[dict]]":
    """The records in the result store ``store`` (a directory) of the builds ``bkeys``
    (:func:`build_key`): per build, one per layer index below ``per[b]``, in index order."""
    import json

    from sim.dist import ResultStore

    got = [{} for _ in bkeys]
    for _, row in ResultStore(store).items():
        if row.get("bkey") in bkeys:
            b = bkeys.index(row["bkey"])
            for r in json.loads(row["records"]):
                if r["index"] < per[b]:
                    got[b].setdefault(r["index"], r)
    return [[g[i] for i in sorted(g)] for g in got]


def plan_chunks(done: "list[set[int]]", per: "list[int]", chunk: int) -> "list[tuple[int, int, int]]":
    """``(build, start, count)`` of the layers still to run: of build ``b`` the indices below
    ``per[b]`` not in ``done[b]``, in runs of at most ``chunk`` that never cross a multiple of
    ``chunk``, ordered chunk by chunk over the builds (every build runs early in a long regression)."""
    out = []
    for b, (seen, n) in enumerate(zip(done, per)):
        i = 0
        while i < n:
            if i in seen:
                i += 1
                continue
            j = i + 1
            while j < n and j not in seen and j % chunk:
                j += 1
            out.append((b, i, j - i))
            i = j
    return sorted(out, key=lambda t: (t[1] // chunk, t[0], t[1]))


def run_chunk(bkey: str, build: int, params: dict, cap: dict, seed: int, start: int, count: int,
              simulator: str, stop_event: str | None = None) -> dict:
    """Random layers ``start .. start + count - 1`` of regression ``seed`` on the build ``params``:
    a task of the Dask engine, run on a worker (which builds the testbench or reuses its build,
    :func:`hw.cosim.build_native`; a build in progress under the same key is waited for, not
    repeated). Stops at the first failing layer, or after the layer in progress once the Dask event
    ``stop_event`` is set. Returns the result store's row: ``bkey``, ``build``, ``start``,
    ``count``, ``layers`` (records that came back) and ``records`` (their JSON)."""
    import json
    import time

    from hw.cosim import run_native

    cancel = None
    if stop_event:
        from distributed import Event

        ev, last = Event(stop_event), [time.monotonic()]

        def cancel():  # a scheduler round trip: asked once a second
            if time.monotonic() - last[0] < 1.0:
                return False
            last[0] = time.monotonic()
            return ev.is_set()

    out = run_native(CoreParams(**params), Capacity(**cap), {"kind": "random", "seed": seed, "start": start,
                                                             "count": count},
                     simulator=simulator, stop_on_fail=True, cancel=cancel)
    recs = out["results"]
    return {"bkey": bkey, "build": build, "start": start, "count": count, "layers": len(recs),
            "records": json.dumps(recs)}
