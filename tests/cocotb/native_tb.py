"""cocotb side of the native-speed testbench ``loas_tb`` (hw/harness.py), driven by
hw.cosim.run_native.

Per layer: write the load image (hex), set the layer registers and the testbench's randomness,
change ``seq`` and await ONE ``RisingEdge(finished)``; the simulator loads, runs and captures the
layer without Python. Then the scoreboard (here, in Python): every output word and output fiber
against sim.golden, the cycle count against sim.tppe.core_cycles (hw.harness.score), nothing
missing, nothing twice. One JSON line per layer goes to the
results file as soon as it is known (the caller's progress bar and resumption read it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge, Timer

from hw.harness import image_bytes, read_capture, score, write_image
from hw.host import load_image
from hw.regress import cases
from sim.params import Capacity, CoreParams
from sim.tppe import core_cycles


def _set(dut, **values):
    for name, v in values.items():
        getattr(dut, name).value = int(v)


@cocotb.test()
async def run_layers(dut):
    cfg = json.loads(Path(os.environ["LOAS_NATIVE_IN"]).read_text())
    params, cap = CoreParams(**cfg["params"]), Capacity(**cfg["cap"])
    image_path, capture_path = cfg["image"], cfg["capture"]
    _set(dut, rst=1, seq=0, reload=0, n_words=0, idle_thresh=0, bp_thresh=0, seed=0, budget=0,
         threshold=0, decay_shift=0, n_mask=0, rows=1, cols=1, chunks=1)
    await Timer(10, unit="ns")
    dut.rst.value = 0
    await Timer(4, unit="ns")
    seq = 0
    with open(cfg["results"], "a") as out:
        for case in cases(cfg["source"], params, cap):
            if cfg.get("stop_file") and Path(cfg["stop_file"]).exists():  # the caller cancelled the run
                break
            t0 = time.perf_counter()
            try:  # a layer past the build's memories would wrap onto its own first words
                cap.check(case.words, case.weights, case.bias)
            except ValueError as exc:
                raise ValueError(f"{case.name} does not fit this build: {exc}") from None
            image = load_image(case.words, case.weights, case.bias, params, all_chunks=True)
            n_words = write_image(image_path, image, params)
            M, K = case.words.shape
            N = case.weights.shape[1]
            # A hung core is abandoned after a budget well above the timing model's cycles.
            model = core_cycles(case.words, case.weights, params).total
            budget = int((2 * model + 1000) / max(0.05, 1 - case.backpressure)) + 20_000
            seq += 1
            _set(dut, reload=1, n_words=n_words, idle_thresh=int(case.idle * 65536),
                 bp_thresh=int(case.backpressure * 65536), seed=case.seed, budget=budget,
                 threshold=case.lif.threshold, decay_shift=case.lif.decay_shift, n_mask=case.n_mask,
                 rows=M, cols=N, chunks=params.chunks(K))
            dut.seq.value = seq
            t1, c1 = time.perf_counter(), time.process_time()
            await RisingEdge(dut.finished)
            # Wall and CPU time of the simulator (this process) on the layer: on a shared machine the
            # CPU seconds say how fast the simulation is, the wall seconds also how busy the machine is.
            sim_s, sim_cpu = time.perf_counter() - t1, time.process_time() - c1
            rtl = int(dut.rtl_cycles.value)
            load_c, run_c = int(dut.load_cycles.value), int(dut.run_cycles.value)
            beats = read_capture(capture_path, int(dut.beats.value), params, cap)
            res = score(case, beats, params, rtl, bool(int(dut.timeout.value)), bool(int(dut.overflow.value)),
                        model=model)
            sim_cycles = load_c + run_c + 6  # + the sequencer's own cycles
            res.update({"case": case.name, **case.meta, "M": M, "K": K, "N": N, "rtl_cycles": rtl,
                        "load_cycles": load_c, "sim_cycles": sim_cycles, "sim_s": round(sim_s, 5),
                        "sim_cycles_per_s": round(sim_cycles / sim_s) if sim_s > 0 else None,
                        "sim_cpu_s": round(sim_cpu, 5),
                        "sim_cycles_per_cpu_s": round(sim_cycles / sim_cpu) if sim_cpu > 0 else None,
                        "wall_s": round(time.perf_counter() - t0, 4), "image_words": n_words,
                        "dram_bytes": image_bytes(image, params, cap), "idle": case.idle,
                        "backpressure": case.backpressure, "n_mask": case.n_mask})
            out.write(json.dumps(res) + "\n")
            out.flush()
            if not res["pass"] and cfg.get("stop_on_fail", True):
                break
