"""Cycle-level model of LoAS (spec/loas.md sections 2-8); its result type is :class:`sim.result.LayerSim`.

The model is the accelerator of hw/accel.py (hw/README.md "Accelerator"), cycle-exact with the
deterministic DRAM model: :func:`sim.memory.accel_timing` on :func:`sim.params.chip_from_config` of
the configuration gives the cycles (each tile's fetch by the fetch unit through the DRAM port, the
core's compute per tile from :func:`sim.tppe.core_cycles`, the output writer's drain, as the RTL's
two sequencers overlap them), the DRAM bytes per region and the buffer (tile memory) accesses per
region, all equal to the RTL's counters. This module turns them into a :class:`LayerSim`:

* cycles = the accelerator's ``cycles`` counter; ``compute_cycles`` = its ``compute`` (core cycles
  summed over tiles);
* stalls = the core's stall causes (sim.tppe, lane cycles, summed over tiles) and the cycles the core
  is idle: ``fetch`` (waiting for its tile's fetch, DRAM latency included), ``writer`` (waiting for
  the output writer), ``control`` (sequencer cycles); the fetch unit's DRAM wait (the ``fetch_wait``
  counter, partly hidden under compute) is in ``detail``;
* DRAM bytes by operand = the per-region counters (:data:`sim.memory.REGION_OPERAND`); buffer bytes =
  the fetch unit's buffer writes plus the lanes' counted reads (one pointer per side and one bias per
  job, one weight and one spike word per match; the mask-window reads are not counted, as in the
  RTL); energy from these counts.

Loop order (``cfg.loop_order``, a descriptor field of the accelerator): mntk (LoAS's: a row group's
A tile resident while the B tiles stream past) or nmtk (a B tile resident while the row groups'
A tiles stream past; the paper's ablation, also modelled by sim/paper.py). The GEMM (im2col) view of
every layer is used, as for every design in :mod:`sim.baselines`.
"""

from __future__ import annotations

import numpy as np

from sim.config import LoASConfig
from sim.energy import EnergyConfig
from sim.errors import ConfigError
from sim.memory import OPERANDS, accel_timing, check_operands_fit, fiber_ptr
from sim.params import chip_from_config
from sim.result import LayerSim, layer_sim, prologue


def simulate_layer(words: np.ndarray, weights: np.ndarray, cfg: LoASConfig | None = None, *,
                   T: int | None = None, out_words: np.ndarray | None = None, name: str = "layer",
                   econf: EnergyConfig | None = None) -> LayerSim:
    """Simulate one layer on LoAS: the accelerator ``chip_from_config(cfg)`` with its DRAM port.

    Parameters
    ----------
    words : uint16 (M, K)      packed input spike words
    weights : int8 (K, N)
    cfg : LoASConfig           defaults to sim/configs/loas.yaml's values (the class defaults)
    T : int                    timesteps of the trace (defaults to cfg.timesteps)
    out_words : uint16 (M, N)  the layer's output words (from the trace); they size the packed
                               output writes. None: the golden model's
                               (:func:`sim.synthetic.golden_outputs`)
    name : str                 layer name in the result and in errors
    econf : EnergyConfig       energy constants (defaults to sim/configs/energy.yaml)

    Raises
    ------
    ValueError
        On operands of the wrong dtype or shape, or spike words wider than T.
    sim.errors.ConfigError
        On a chip the configuration cannot build (e.g. tiles that do not fit ``buffer.capacity_kb``).
    sim.errors.LayerFitError
        On a layer that does not fit the chip (one line naming the layer and the dimension).
    """
    cfg, T, words, weights, M, K, N = prologue(words, weights, cfg, T)
    if T > cfg.timesteps:
        raise ValueError(f"the trace has T={T} but the hardware is built for timesteps={cfg.timesteps}")
    chip = build_chip(cfg)
    check_operands_fit(name, words, weights, chip)
    if out_words is None:
        from sim.synthetic import golden_outputs

        out_words = golden_outputs(words, weights, T)
    elif np.shape(out_words) != (M, N):
        raise ValueError(f"layer {name}: out_words has shape {np.shape(out_words)}, expected ({M}, {N})")
    at = accel_timing(words, weights, out_words, chip, cfg.loop_order)
    # sum_{m,n} |nz(A[m]) & nz(B[:, n])| = sum_k (non-silent words in column k) x (non-zeros in row k)
    ops = int(np.dot(np.count_nonzero(words, axis=0).astype(np.int64), np.count_nonzero(weights, axis=1).astype(np.int64)))
    # The F side examines `lookahead` chunk pairs per cycle: at least ceil(C / L) windows per fiber.
    scanned = M * N * -(-max(1, -(-K // cfg.chunk_bits)) // cfg.lookahead)
    stalls = {**at.core_stalls, **at.idle}
    lines = sum(at.bytes_read.values()) // chip.mem.line_bytes
    detail = {"loop_order": cfg.loop_order, "tiles": at.tiles, "fetch_wait": at.fetch_wait,
              "fetch_cycles": at.fetch, "write_cycles": at.write, "words_loaded": at.words_loaded,
              "bytes_read": dict(at.bytes_read), "bytes_written": dict(at.bytes_written),
              "buffer_reads": dict(at.buffer_reads), "buffer_writes": dict(at.buffer_writes),
              "nnz_spike_words": int(np.count_nonzero(words)), "nnz_weights": int(np.count_nonzero(weights))}
    return layer_sim("loas", name, M=M, K=K, N=N, T=T, cycles=at.cycles, compute_cycles=at.compute,
                     pe_busy=at.pe_busy, stalls=stalls, effectual_ops=ops, chunks_scanned=scanned,
                     traffic=at.traffic(chip), buffer_hits=sum(at.buffer_reads.values()), buffer_misses=lines,
                     cfg=cfg, econf=econf, detail=detail)


def fitted(cfg: LoASConfig, words, weights) -> LoASConfig:
    """``cfg`` with the chip's capacities (``tile.a_nnz``, ``tile.b_nnz``, ``tile.max_k``,
    ``tile.max_m``, ``tile.max_n`` and ``buffer.capacity_kb``) grown, to powers of two, as far as
    this layer needs; never shrunk. The tile sizes, the DRAM port and the core are kept, so the
    cycles are those of the accelerator with memories large enough for the layer (for design-space
    searches over networks whose layers a fixed build would refuse)."""
    import dataclasses

    from sim.memory import tile_nnz

    words, weights = np.asarray(words), np.asarray(weights)
    M, K = words.shape
    N = weights.shape[1]
    t = cfg.tile

    def grow(have, need):
        return max(have, 1 << max(0, int(need - 1).bit_length()))

    tr, tc = min(M, t.m), min(N, t.n)
    tile = dataclasses.replace(
        t, max_m=grow(t.max_m, M), max_n=grow(t.max_n, N), max_k=grow(t.max_k, K),
        a_nnz=grow(t.a_nnz, tile_nnz(fiber_ptr(np.count_nonzero(words, axis=1)), M, tr)),
        b_nnz=grow(t.b_nnz, tile_nnz(fiber_ptr(np.count_nonzero(weights, axis=0)), N, tc)))
    out = dataclasses.replace(cfg, tile=tile)
    need_kib = -(-chip_from_config(out, buffer_kib=1 << 20).buffer_bytes() // 1024)
    return dataclasses.replace(out, buffer=dataclasses.replace(cfg.buffer, capacity_kb=grow(cfg.buffer.capacity_kb, need_kib)))


def build_chip(cfg: LoASConfig, source: str = "config"):
    """:func:`sim.params.chip_from_config`, its refusal as a one-line :class:`ConfigError`."""
    try:
        return chip_from_config(cfg)
    except ValueError as exc:
        key, _, problem = str(exc).partition(": ")
        raise ConfigError(source, key, problem) from None


__all__ = ["LayerSim", "OPERANDS", "build_chip", "fitted", "prologue", "simulate_layer"]
