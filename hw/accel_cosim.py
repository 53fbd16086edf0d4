"""The accelerator (hw/accel.py) under cocotb, Verilator by default: the build of hw.cosim
(cached by content key), the testbench tests/cocotb/accel_tb.py with the AXI DRAM model of
hw/dram.py, and the host-side read-back of the output fibers from DRAM."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hw.cosim import ROOT, TB_DIR, build, setup_verilator


def run_accel(words, weights, bias, lif, n_mask: int, chip, *, simulator: str = "verilator",
              random_dram: bool = False, seed: int = 0, name: str = "layer") -> dict:
    """Run one layer through ``Accelerator(chip)`` under cocotb; return the counters (as
    :func:`hw.amsim.run_accel_sim`), ``collector`` (the output fibers read back from DRAM),
    ``sim_wall_s`` and ``build_s``. RuntimeError when the testbench fails."""
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    from hw.accel import Accelerator
    from hw.host import dram_image, read_outputs

    img = dram_image(words, weights, bias, lif, n_mask, chip, name=name)
    spec = dataclasses.asdict(chip)
    t0 = time.perf_counter()
    bdir = build("loas_accel", lambda: Accelerator(chip), spec, simulator)
    t_build = time.perf_counter() - t0
    M, K = np.shape(words)
    N = np.shape(weights)[1]
    budget = 50 * (M * N * (chip.core.chunks(K) * 64 + 64) + len(img.mem)) + 10_000
    with tempfile.TemporaryDirectory(prefix="accel-", dir=bdir) as tmp:
        tmp = Path(tmp)
        (tmp / "dram.bin").write_bytes(bytes(img.mem))
        inp, outp = tmp / "in.json", tmp / "out.json"
        inp.write_text(json.dumps({"chip": spec, "desc": img.desc, "image": str(tmp / "dram.bin"),
                                   "image_out": str(tmp / "dram_out.bin"), "seed": seed,
                                   "random_dram": random_dram, "budget": budget}))
        if simulator == "verilator":
            setup_verilator()
        xml = get_runner(simulator).test(
            test_module="accel_tb", hdl_toplevel="loas_accel", hdl_toplevel_lang="verilog", build_dir=bdir,
            test_dir=TB_DIR, extra_env={"LOAS_COSIM_IN": str(inp), "LOAS_COSIM_OUT": str(outp),
                                        "PYTHONPATH": os.pathsep.join([str(ROOT), str(TB_DIR)])},
            results_xml=str(tmp / "results.xml"), log_file=tmp / "sim.log")
        _, failed = get_results(Path(xml))
        if failed or not outp.exists():
            log = (tmp / "sim.log").read_text()[-3000:] if (tmp / "sim.log").exists() else ""
            raise RuntimeError(f"cocotb testbench of the accelerator failed ({simulator}):\n{log}")
        res = json.loads(outp.read_text())
        img.mem[:] = (tmp / "dram_out.bin").read_bytes()
    res["build_s"] = t_build
    res["collector"] = read_outputs(img, chip)
    res["image"] = img
    return res
