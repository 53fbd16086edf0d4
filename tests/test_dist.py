"""The Dask engine of `loas sweep` / `loas compare` (sim/dist.py): a cluster given by address (scheduler
and workers started as separate processes on 127.0.0.1), an embedded LocalCluster with a worker killed
mid-task, and a sweep killed and resumed from its result store."""

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ROOT, loas

from sim import dist
from sim.config import LoASConfig
from sim.energy import load_energy
from sim.report import (LayerInput, parse_params, run_design, sweep, synthetic_inputs, totals, vgg16_shapes,
                        workload_inputs)
from sim.synthetic import write_random_workload
from sim.trace import Geometry

DASK = str(Path(sys.executable).parent / "dask")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _wait_for(cond, timeout, what):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _stop(proc):
    """End a process started with start_new_session=True and everything it spawned (its group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """`dask scheduler` and `dask worker ADDRESS` (2 single-threaded worker processes), on loopback."""
    d = tmp_path_factory.mktemp("dask")
    sfile = d / "scheduler.json"
    procs, logs = [], []

    def start(*args, log):
        logs.append(open(d / log, "w"))
        procs.append(subprocess.Popen([DASK, *args], env=ENV, cwd=d, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=logs[-1]))

    try:
        start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--dashboard-address",
              "127.0.0.1:0", "--scheduler-file", str(sfile),
              log="scheduler.log")
        _wait_for(lambda: sfile.exists() and sfile.stat().st_size > 0, 60, "the scheduler file")
        address = json.loads(sfile.read_text())["address"]
        start("worker", address, "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
              log="worker.log")
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            _stop(p)
        for f in logs:
            f.close()


@pytest.fixture(scope="module")
def wls(tmp_path_factory):
    root = tmp_path_factory.mktemp("w")
    return [write_random_workload(root / name, {"conv": Geometry(16, 8, 8, 3, 1, 1, 32), "fc": Geometry.fc(96, 10)},
                                  T=4, seed=seed, weight_density=0.1) for name, seed in (("a", 1), ("b", 2))]


def _direct(params, workloads, designs=("loas", "sparten")):
    """The sweep's rows computed here, in this process, with the models called directly."""
    rows = []
    for p in [dict(zip(params, v)) for v in itertools.product(*params.values())]:
        for w in workloads:
            cfg = LoASConfig(**p)
            res = {d: totals(run_design(d, workload_inputs(w), cfg)) for d in designs}
            rows.append({**p, "workload": str(w), "cycles": res["loas"]["cycles"],
                         "energy_pj": res["loas"]["energy"], "pe_utilization": res["loas"]["pe_utilization"],
                         "speedup_vs_sparten": res["sparten"]["cycles"] / res["loas"]["cycles"]})
    return rows


def _strip(rows, keys=("pes", "schedule", "workload", "cycles", "energy_pj", "pe_utilization", "speedup_vs_sparten")):
    return [{k: r[k] for k in keys if k in r} for r in rows]


def test_sweep_on_a_cluster_by_address_stores_and_skips(scheduler, wls, tmp_path):
    params = {"pes": [4, 8], "schedule": ["lockstep", "dynamic"]}
    res = sweep(params, base=LoASConfig(), workloads=wls, out=tmp_path, scheduler=scheduler, progress=False)
    assert not res.failures and (res.computed, res.cached) == (16, 0)  # 4 points x 2 workloads x 2 layers
    got, want = _strip(res.rows), _strip(_direct(params, wls))
    assert [(g["workload"], g["cycles"]) for g in got] == [(w["workload"], w["cycles"]) for w in want]
    for g, w in zip(got, want):
        for k in ("energy_pj", "pe_utilization", "speedup_vs_sparten"):
            assert g[k] == pytest.approx(w[k], rel=1e-12)
    assert len(dist.ResultStore(tmp_path / "store")) == 16
    again = sweep(params, base=LoASConfig(), workloads=wls, out=tmp_path, scheduler=scheduler, progress=False)
    assert (again.computed, again.cached) == (0, 16) and again.rows == res.rows
    # Another energy model makes other keys: computed, not reused.
    e = dataclasses.replace(load_energy(), dram_nj_per_access=5.0)
    other = sweep({"pes": [4]}, base=LoASConfig(), workloads=wls[:1], out=tmp_path, scheduler=scheduler,
                  progress=False, econf=e)
    assert (other.computed, other.cached) == (2, 0)


def test_failing_point_is_reported_and_the_rest_run(scheduler):
    good = synthetic_inputs(4, shapes=[("good", 8, 64, 8)])[0]
    bad = LayerInput("bad", good.words, good.weights[:32], 4)  # K mismatch: check_gemm raises
    cfg, e = LoASConfig(), load_energy()
    from sim.report import simulate_layer

    tasks = [dist.Task(dist.digest(li.name, d), simulate_layer, (d, dist.Shared(li), cfg, e),
                       {"design": d, "layer": li.name}) for li in (good, bad) for d in ("loas", "gospa")]
    oc = dist.run_tasks(tasks, scheduler=scheduler, progress=False)
    assert sorted(f["label"]["design"] for f in oc.failures) == ["gospa", "loas"]
    assert all(f["label"]["layer"] == "bad" and "K mismatch" in f["error"] for f in oc.failures)
    assert oc.computed == 2 and {s.layer for s in oc.results.values()} == {"good"}


def test_cli_on_scheduler_env_compare_several_workloads(scheduler, wls, tmp_path):
    env = {**ENV, dist.SCHEDULER_ENV: scheduler}
    r = subprocess.run([sys.executable, "-m", "loas.cli", "compare", *map(str, wls), "--designs", "sparten,gamma",
                        "--out", str(tmp_path), "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "connecting to the Dask scheduler" in r.stderr
    out = json.loads(r.stdout)["workloads"]
    assert [Path(w["workload"]).name for w in out] == ["a", "b"]
    for w, path in zip(out, wls):
        direct = totals(run_design("gamma", workload_inputs(path), LoASConfig()))["cycles"]
        assert w["baselines"]["gamma"]["speedup"] == pytest.approx(direct / w["loas"]["cycles"])
        assert (tmp_path / Path(path).name / "compare.csv").stat().st_size > 0
    r = subprocess.run([sys.executable, "-m", "loas.cli", "sweep", "--param", "pes=4", "--workload", str(wls[0]),
                        "--scheduler", "tcp://127.0.0.1:9", "--out", str(tmp_path / "x")], capture_output=True,
                       text=True, env={**ENV, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"})
    assert r.returncode == 2 and "--scheduler tcp://127.0.0.1:9: cannot connect" in r.stderr
    assert "Traceback" not in r.stderr


def test_worker_killed_mid_task_is_retried(tmp_path):
    params = {"pes": [4, 8, 16]}
    with dist.local_cluster(2) as cluster:
        out = {}
        th = threading.Thread(target=lambda: out.update(res=sweep(
            params, base=LoASConfig(), designs=("loas",), layer="conv9", scheduler=cluster.scheduler_address,
            out=tmp_path, progress=False)))
        th.start()
        s = cluster.scheduler
        busy = lambda: [ws for ws in list(s.workers.values()) if ws.processing]  # noqa: E731
        _wait_for(lambda: busy() or not th.is_alive(), 120, "a worker to start a point")
        victim = busy()[0]
        keys = [ts.key for ts in victim.processing]
        os.kill(victim.pid, signal.SIGKILL)
        th.join(180)
        assert not th.is_alive()
        res = out["res"]
        assert not res.failures and res.computed == 3
        # The killed worker's point was handed to a worker again and finished there.
        story = [t for t in s.story(*keys) if len(t) > 2 and t[2] == "processing"]
        assert len(story) >= 2
    conv9 = [s_ for s_ in vgg16_shapes() if s_[0] == "conv9"]
    direct = [totals(run_design("loas", synthetic_inputs(4, shapes=conv9), LoASConfig(pes=p)))["cycles"]
              for p in params["pes"]]
    assert [r["cycles"] for r in res.rows] == direct


def test_killed_sweep_resumes_and_equals_one_shot(scheduler, tmp_path):
    grid = ["pes=4,8,16,32", "lookahead=1,4"]
    args = ["sweep", *[a for g in grid for a in ("--param", g)], "--layer", "conv4", "--designs", "gamma",
            "--workers", "1", "--no-progress", "--json", "--out", str(tmp_path / "r")]
    store = tmp_path / "r" / "store"
    p = subprocess.Popen([sys.executable, "-m", "loas.cli", *args], env=ENV, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(dist.ResultStore(store)) >= 2 or p.poll() is not None, 120, "2 stored points")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the whole sweep: client and its embedded cluster
        p.wait(20)
    before = len(dist.ResultStore(store))
    assert 2 <= before < 8 and not list(store.glob(".*.tmp"))
    r = loas(*args)
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout)
    assert resumed["cached"] == before and resumed["computed"] == 8 - before
    one = sweep(parse_params(grid), base=LoASConfig(), designs=("loas", "gamma"), layer="conv4",
                out=tmp_path / "one", scheduler=scheduler, progress=False)
    assert resumed["rows"] == json.loads(json.dumps(one.rows))
    for f in ("sweep.csv", "sweep.parquet", "sweep.json", "sweep.png"):
        assert (tmp_path / "r" / f).stat().st_size > 0
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "r" / "sweep.parquet").to_pylist() == resumed["rows"]


# The SNASNet search on the engine ------------------------------------------------------------------
def _fmnist():
    from models.data import FASHION_MNIST_DIR

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} (Debian package dataset-fashion-mnist)")


NAS = ["--channels", "2", "--T", "2", "--batch-size", "8", "--batches", "1", "--device", "cpu", "--seed", "3"]


def _search_here(num, channels=2, T=2, batch=8, seed=3, dropout=True):
    """The ranking `loas nas search` must print, computed in this process without the engine."""
    import torch

    from models.data import batches, load_dataset
    from models.snasnet_search import NetSpec, draw_candidates, search

    torch.set_num_threads(1)
    ds = load_dataset("fashion-mnist", None, "train")
    xs = [x for _, (x, _) in zip(range(1), batches(ds, batch, shuffle=True, seed=seed))]
    ranked = search(NetSpec("fashion-mnist", channels, T).build, xs, num_search=num, seed=seed, progress=False,
                    candidates=draw_candidates(num, seed), dropout=dropout)
    return [(c.index, str(c.matrix), c.score) for c in ranked]


def _ranking(doc):
    return [(c["index"], c["cnt_mat"], c["score"]) for c in doc["candidates"]]


@pytest.mark.slow
def test_search_on_a_cluster_by_address_equals_in_process_and_resumes(scheduler, tmp_path):
    _fmnist()
    argv = ["nas", "search", "--num-search", "4", *NAS, "--scheduler", scheduler, "--out", tmp_path, "--json"]
    r = loas(*argv)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["computed"], doc["cached"], doc["failures"]) == (4, 0, [])
    assert _ranking(doc) == _search_here(4)
    assert len(dist.ResultStore(tmp_path / "store")) == 4
    assert (tmp_path / "search.csv").read_text().count("\n") == 5
    again = json.loads(loas(*argv).stdout)
    assert (again["computed"], again["cached"]) == (0, 4) and again["candidates"] == doc["candidates"]
    # The library call with the CLI's settings finds the CLI's cells; with another T it computes.
    from models.data import batches, load_dataset
    from models.snasnet_search import NetSpec, draw_candidates, run_search

    xs = [next(batches(load_dataset("fashion-mnist", None, "train"), 8, shuffle=True, seed=3))[0]]
    store = dist.ResultStore(tmp_path / "store")
    for T, cached in ((2, 4), (3, 0)):
        ranked, oc = run_search(NetSpec("fashion-mnist", 2, T), xs, draw_candidates(4, 3), seed=3, store=store,
                                scheduler=scheduler, threads=1, device="cpu", progress=False)
        assert (oc.computed, oc.cached) == (4 - cached, cached)
    assert [(c.index, str(c.matrix), c.score) for c in ranked] == _search_here(4, T=3) != _ranking(doc)


@pytest.mark.slow
def test_killed_search_on_two_local_workers_resumes_and_equals_one_shot(tmp_path):
    _fmnist()
    n = 16  # enough cells that a quiet machine cannot store them all between two polls
    args = ["nas", "search", "--num-search", str(n), *NAS, "--channels", "4", "--batch-size", "16", "--workers", "2",
            "--no-progress", "--json", "--out", tmp_path / "r"]
    store = tmp_path / "r" / "store"
    p = subprocess.Popen([sys.executable, "-m", "loas.cli", *map(str, args)], env=ENV, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(dist.ResultStore(store)) >= 1 or p.poll() is not None, 180, "a stored cell")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the client and its embedded cluster
        p.wait(20)
    before = len(dist.ResultStore(store))
    # SIGKILL may leave a writer's temp file (.NAME.tmp); every stored file is whole and readable
    import pyarrow.parquet as pq

    assert 1 <= before < n
    assert all(pq.read_table(f).num_rows for f in store.glob("[!.]*.parquet"))
    r = loas(*args)
    assert r.returncode == 0, r.stderr
    resumed = json.loads(r.stdout)
    assert (resumed["cached"], resumed["computed"]) == (before, n - before)
    assert _ranking(resumed) == _search_here(n, channels=4, batch=16)


def _no_retries():
    """dask.config.set of allowed-failures 0 (a lost worker fails its task at once). distributed is
    imported first: a set entered before distributed registers its defaults records the whole
    ``distributed`` section as new and deletes it on exit, and every later Client in the process
    then fails with KeyError 'distributed'."""
    import dask
    import distributed  # noqa: F401

    return dask.config.set({"distributed.scheduler.allowed-failures": 0})


def test_no_retries_keeps_distributed_defaults():
    """In a fresh interpreter (distributed not yet imported), _no_retries leaves Dask's config whole."""
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
            "import dask, test_dist\n"
            "assert 'distributed' not in sys.modules\n"
            "with test_dist._no_retries():\n    pass\n"
            "print(dask.config.get('distributed.comm.timeouts.connect'))")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT), str(ROOT / "tests")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux only)")
def test_keep_large_blocks_reuses_freed_tensors():
    """With keep_large_blocks, a loop that allocates and frees 32 and 16 MiB tensors (as a candidate's
    layers do) runs from reused heap memory once warm; without it, glibc maps every block above its
    threshold afresh and faults its pages in each time."""
    code = ("import resource, sys, torch\nsys.path.insert(0, sys.argv[1])\nfrom sim import dist\n"
            "if sys.argv[2] == '1':\n    assert dist.keep_large_blocks()\n"
            "def step():\n    a = torch.ones(8 << 20); b = torch.ones(4 << 20); del a; c = torch.ones(8 << 20)\n"
            "for _ in range(10):\n    step()\n"
            "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(10):\n    step()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)")
    faults = [int(subprocess.run([sys.executable, "-c", code, str(ROOT), keep], capture_output=True, text=True,
                                 check=True).stdout) for keep in "01"]
    pages = (32 << 20) // os.sysconf("SC_PAGE_SIZE")  # one 32 MiB tensor
    assert faults[0] >= 10 * pages and faults[1] <= pages // 4, faults


@pytest.mark.slow
def test_failing_points_exit_1_and_are_named(tmp_path):
    """A worker lost mid-point (allowed-failures 0: the point is not retried) fails that point only:
    the sweep and the search finish the others, name the failed point and exit with status 1."""
    _fmnist()
    with _no_retries(), dist.local_cluster(2) as cluster:
        s = cluster.scheduler
        cases = [(["sweep", "--param", "pes=2,4,8,16", "--layer", "conv9", "--designs", "gamma", "--out",
                   tmp_path / "sweep"], "loas: sweep: point pes=", 4),
                 (["nas", "search", "--num-search", "6", *NAS, "--channels", "8", "--batch-size", "32",
                   "--out", tmp_path / "nas"], "loas: search: point index=", 6)]
        for argv, named, total in cases:
            cluster.wait_for_workers(2)
            p = subprocess.Popen([sys.executable, "-m", "loas.cli", *map(str, argv), "--scheduler",
                                  cluster.scheduler_address, "--no-progress", "--json"], env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            busy = lambda: [ws for ws in list(s.workers.values()) if ws.processing]  # noqa: E731
            _wait_for(lambda: busy() or p.poll() is not None, 180, "a worker to start a point")
            os.kill(busy()[0].pid, signal.SIGKILL)
            out, err = p.communicate(timeout=300)
            assert p.returncode == 1, err
            doc = json.loads(out)
            assert 1 <= len(doc["failures"]) < total and all("KilledWorker" in f["error"] for f in doc["failures"])
            assert named in err and "failed (listed above)" in err and "Traceback" not in err
            done = len(doc["rows"]) if argv[0] == "sweep" else len(doc["candidates"])
            assert done == total - len(doc["failures"])


def test_sweep_key_holds_the_designs(tmp_path):
    """A layer point's row holds one set of figures per design: another design list is computed."""
    kw = dict(base=LoASConfig(), layer="conv13", out=tmp_path, progress=False, workers=1)
    a = sweep({"pes": [4, 8]}, designs=("loas", "sparten"), **kw)
    b = sweep({"pes": [4, 8]}, designs=("loas", "gamma"), **kw)
    assert (a.computed, b.computed, b.cached) == (2, 2, 0)
    assert "speedup_vs_gamma" in b.rows[0] and "speedup_vs_sparten" not in b.rows[0]
    assert [r["cycles"] for r in a.rows] == [r["cycles"] for r in b.rows]  # LoAS itself is the same
    c = sweep({"pes": [4, 8]}, designs=("loas", "sparten"), **kw)
    assert (c.computed, c.cached) == (0, 2) and c.rows == a.rows


def test_sweep_report_is_swapped_in_whole_and_the_store_kept(scheduler, tmp_path):
    out = tmp_path / "r"
    argv = ["sweep", "--param", "pes=4,8", "--layer", "conv13", "--designs", "gamma", "--scheduler", scheduler,
            "--no-progress", "--json", "--out", out]
    first = loas(*argv)
    assert first.returncode == 0, first.stderr
    inode = (out / "sweep.csv").stat().st_ino
    again = loas(*argv)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert (doc["computed"], doc["cached"]) == (0, 2)  # the store survived the swap of its folder
    assert (out / "sweep.csv").stat().st_ino != inode and len(dist.ResultStore(out / "store")) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(["store", "sweep.csv", "sweep.json", "sweep.parquet",
                                                             "sweep.png"])
    assert not [p for p in tmp_path.iterdir() if p.name != "r"]  # no temp or old folder left beside it
    (out / "notes.txt").write_text("mine")
    r = loas(*argv)
    assert r.returncode == 2 and "notes.txt" in r.stderr and "not files of a sweep report" in r.stderr


# The RTL regression on the engine ----------------------------------------------------------------
def test_run_stops_at_a_result_and_cancels_the_rest():
    """``stop`` true for a result: the run ends there, that result kept, the points outstanding
    cancelled rather than waited for (four of 5 s each on two workers)."""
    tasks = [dist.Task("fast", time.sleep, (0.1,), {"i": 0})]
    tasks += [dist.Task(f"slow{i}", time.sleep, (5.0,), {"i": i}) for i in range(1, 5)]
    from distributed import Client

    with dist.local_cluster(2) as cluster, Client(cluster) as client:
        oc = dist.run(client, tasks, progress=False, stop=lambda key, res: key == "fast")
        assert oc.stopped and list(oc.results) == ["fast"] and oc.computed == 1 and not oc.failures
        assert oc.seconds < 4.5


@pytest.mark.rtl
def test_regress_on_a_cluster_by_address_equals_serial(scheduler, tmp_path, monkeypatch, capsys):
    """`loas rtl regress` on the cluster of LOAS_SCHEDULER (scheduler and 2 workers as separate
    processes): the records of one serial testbench run, and the store kept in --out."""
    from loas.cli import main
    from test_hw_native import TIMES, serial_records

    monkeypatch.setenv(dist.SCHEDULER_ENV, scheduler)
    assert main(["rtl", "regress", "--count", "5", "--seed", "4", "--builds", "1", "--chunk", "2", "--out",
                 str(tmp_path), "--no-progress", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["complete"] and res["chunks_run"] == 3 and res["mismatches"] == 0
    recs = [json.loads(x) for x in (tmp_path / "build0.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in TIMES} for r in recs] == serial_records(4, 5)
    assert len(dist.ResultStore(tmp_path / "store")) == 3


@pytest.mark.rtl
def test_regress_chunk_lost_with_its_worker_is_named_and_exits_1(tmp_path):
    """A worker killed (with its simulator) mid-chunk, allowed-failures 0: its chunks fail, named by
    build and layers; the other chunks finish; exit status 1."""
    import psutil

    from hw.cosim import BUILD

    before = set(BUILD.glob("verilator/*/native-*"))
    with _no_retries(), dist.local_cluster(2) as cluster:
        s = cluster.scheduler
        p = subprocess.Popen([sys.executable, "-m", "loas.cli", "rtl", "regress", "--count", "6", "--seed", "4",
                              "--builds", "1", "--chunk", "2", "--out", str(tmp_path), "--scheduler",
                              cluster.scheduler_address, "--no-progress", "--json"], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            busy = lambda: [ws for ws in list(s.workers.values()) if ws.processing]  # noqa: E731
            _wait_for(lambda: busy() or p.poll() is not None, 120, "a worker to start a chunk")
            victim = psutil.Process(busy()[0].pid)
            for proc in [*victim.children(recursive=True), victim]:  # no simulator left running
                proc.kill()
            out, err = p.communicate(timeout=180)
        finally:
            if p.poll() is None:
                p.kill()
                p.communicate()  # reap it and close its pipes (no ResourceWarning in later tests)
    for d in set(BUILD.glob("verilator/*/native-*")) - before:  # the killed run's temporary directory
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    assert p.returncode == 1, err
    doc = json.loads(out)
    # The scheduler may have queued a second chunk on the killed worker: lost with it.
    fails = doc["failures"]
    assert 1 <= len(fails) < 3 and all("KilledWorker" in f["error"] and f["label"]["build"] == 0 for f in fails)
    assert doc["layers"] == 6 - 2 * len(fails) and not doc["complete"]
    assert "loas: regress: point build=0, layers=" in err and "failed (listed above)" in err
    assert "Traceback" not in err


@pytest.mark.rtl
def test_regress_chunk_stops_when_its_event_is_set(scheduler):
    """A chunk on a worker whose regression's stop event is set (a mismatch in another chunk) ends
    after the layer in progress, not after its 8 layers."""
    import dataclasses

    from distributed import Client, Event

    from hw.regress import REGRESS_BUILDS, REGRESS_CAP, build_key, run_chunk

    p = REGRESS_BUILDS[0]
    with Client(scheduler, timeout="30s") as client:
        Event("loas-test-stop", client=client).set()
        row = client.submit(run_chunk, build_key(4, "verilator", p), 0, dataclasses.asdict(p),
                            dataclasses.asdict(REGRESS_CAP), 4, 0, 8, "verilator", "loas-test-stop", pure=False).result()
        Event("loas-test-stop", client=client).clear()
    assert row["layers"] < 8 and len(json.loads(row["records"])) == row["layers"]
