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
