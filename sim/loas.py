"""Cycle-level model of LoAS (spec/loas.md sections 2-8); its result type is :class:`sim.result.LayerSim`.

Compute timing comes from :func:`sim.tppe.core_cycles` (owned by the hardware side: the same
microarchitecture as the RTL in hw/); this module builds the rest of the accelerator around it:
tiling and loop order, the FiberCache-like global buffer, DRAM bandwidth, traffic by operand and
energy by component.

LoAS data movement (loop order ``mntk``, the paper's): the A tile (``tile.m`` spike rows of the
layer, as bitmask + packed T-bit words) stays resident while every weight fiber streams past and is
broadcast to all TPPEs, so

* DRAM: A read once; B swept once per m-tile (misses only for what does not fit beside the A tile,
  see :mod:`sim.memory`); output fibers written once.
* Buffer: each TPPE loads its A chunk once per (n-tile, k-chunk) and keeps it for the ``tile.n``
  columns of the tile; each B chunk is read once per m-tile and broadcast.

Loop order ``nmtk`` (ablation) swaps the roles: a ``tile.n``-column weight tile stays resident and
the spike fibers are swept once per n-tile. Buffer reads are the same; DRAM traffic differs.
The GEMM (im2col) view of A is used for traffic, as for every design in :mod:`sim.baselines`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sim.config import LoASConfig
from sim.energy import EnergyConfig
from sim.memory import OPERANDS, Traffic, capacity_bytes, nbytes, refetch_bytes
from sim.result import LayerSim, finish, prologue

# Inner join statistics (vectorized) --------------------------------------------------------------
@dataclass(frozen=True)
class JoinCost:
    """Cycles of an inner-product PE array built like LoAS's core but with a fast prefix-sum on
    both sides (SparTen's PE): rows in groups of P (one row per PE); for each column n the P PEs
    start together on the shared B fiber and the step costs the max over the group. A PE spends
    ``max(1, matches)`` cycles per 128-bit chunk pair (one join cycle, one match per cycle, as the
    TPPE's F side in sim/tppe.py) plus ``overhead`` cycles per output (start and result, as the
    TPPE)."""

    cycles: int
    busy: np.ndarray  # (P,)
    matches: int
    scanned: int


def _pack_chunks(nz: np.ndarray, chunk: int) -> np.ndarray:
    """Boolean (R, L) -> (R, C, W) words holding each chunk's bitmask (bit order irrelevant here)."""
    R, L = nz.shape
    C = max(1, -(-L // chunk))
    bits = np.zeros((R, C * chunk), bool)
    bits[:, :L] = nz
    packed = np.packbits(bits.reshape(R, C, chunk), axis=2, bitorder="little")  # (R, C, bytes)
    word = {1: np.uint8, 2: np.uint16, 4: np.uint32}.get(packed.shape[2], np.uint64)
    return np.ascontiguousarray(packed).view(word)


def join_cost(nz_a: np.ndarray, nz_b: np.ndarray, *, chunk: int, pes: int, overhead: int = 2,
              block_bytes: int = 32 << 20) -> JoinCost:
    """Group-synchronised inner-join cycles of boolean operands nz_a (M, K) and nz_b (K, N).

    Matches per chunk pair are popcounts of ANDed bitmask words (no BLAS: exact, and immune to
    BLAS thread oversubscription on a loaded machine)."""
    M, K = nz_a.shape
    N = nz_b.shape[1]
    C = max(1, -(-K // chunk))
    Mp = -(-M // pes) * pes
    a = _pack_chunks(np.asarray(nz_a, bool), chunk)  # (M, C, W)
    b = _pack_chunks(np.asarray(nz_b, bool).T, chunk)  # (N, C, W)
    W = a.shape[2]
    rows = max(pes, (block_bytes // max(1, N * C * W * a.itemsize)) // pes * pes)
    cycles, matches = 0, 0
    busy = np.zeros(pes, np.int64)
    for m0 in range(0, Mp, rows):  # a few blocks of rows, to bound memory; not a per-match loop
        blk = a[m0:m0 + rows]
        x = np.bitwise_count(blk[:, None] & b[None]).sum(axis=3, dtype=np.int32)  # (mb, N, C)
        cost = np.maximum(x, 1).sum(axis=2, dtype=np.int64) + overhead  # (mb, N)
        mb = cost.shape[0]
        padded = np.zeros((-(-mb // pes) * pes, N), np.int64)
        padded[:mb] = cost
        per_pe = padded.reshape(-1, pes, N)
        cycles += int(per_pe.max(axis=1).sum())
        busy += per_pe.sum(axis=(0, 2))
        matches += int(x.sum(dtype=np.int64))
    return JoinCost(cycles, busy, matches, M * N * C)


# LoAS --------------------------------------------------------------------------------------------
def _core_timing(words, weights, cfg: LoASConfig):
    """Compute timing of the TPPE array from sim.tppe (the RTL's microarchitecture)."""
    from sim.tppe import core_cycles

    # The core executes the same (row group, column) steps in either loop order; only the order,
    # hence the data movement, differs, so nmtk reuses the mntk step costs.
    return core_cycles(words, weights, dataclasses.replace(cfg, loop_order="mntk"))


def fiber_sizes(words: np.ndarray, weights: np.ndarray, T: int, cfg: LoASConfig,
                out_words: np.ndarray | None = None) -> dict:
    """Bytes of the compressed LoAS fibers (spec/loas.md section 3): bitmasks padded to whole
    chunks, T bits per packed spike word, weight_bits per weight. Without ``out_words`` the output
    is assumed as silent as the input (the ratio of non-silent words carries over)."""
    M, K = words.shape
    N = weights.shape[1]
    ch = cfg.chunk_bits
    kp = -(-K // ch) * ch
    np_ = -(-N // ch) * ch
    nnz_a = int(np.count_nonzero(words))
    nnz_b = int(np.count_nonzero(weights))
    if out_words is None:
        nnz_o = int(round(nnz_a / max(1, words.size) * M * N))
    else:
        nnz_o = int(np.count_nonzero(out_words))
    return {
        "a_bitmask": nbytes(M * kp), "a_values": nbytes(nnz_a * T),
        "b_bitmask": nbytes(N * kp), "b_values": nbytes(nnz_b * cfg.weight_bits),
        "o_bitmask": nbytes(M * np_), "o_values": nbytes(nnz_o * T),
        "nnz_a": nnz_a, "nnz_b": nnz_b, "nnz_o": nnz_o,
    }


def loas_traffic(sz: dict, M: int, N: int, cfg: LoASConfig) -> tuple[Traffic, float]:
    """Buffer and DRAM bytes of LoAS for one layer; returns (traffic, first-tile bytes)."""
    tr = Traffic()
    cap = capacity_bytes(cfg)
    n_mt = -(-M // cfg.tile.m)
    n_nt = -(-N // cfg.tile.n)
    size_a = sz["a_bitmask"] + sz["a_values"]
    size_b = sz["b_bitmask"] + sz["b_values"]
    out_tile = (sz["o_bitmask"] + sz["o_values"]) * min(1.0, cfg.tile.m / M)
    if cfg.loop_order == "mntk":
        a_tile = size_a * min(1.0, cfg.tile.m / M)
        fa = 1.0
        fb = refetch_bytes(size_b, n_mt, cap - a_tile - out_tile) / size_b if size_b else 0.0
        first = a_tile + size_b * min(1.0, cfg.tile.n / N)
    else:
        b_tile = size_b * min(1.0, cfg.tile.n / N)
        fb = 1.0
        fa = refetch_bytes(size_a, n_nt, cap - b_tile - out_tile) / size_a if size_a else 0.0
        first = b_tile + size_a * min(1.0, cfg.tile.m / M)
    # DRAM: reads of A and B (scaled by their refetch factors), output fibers written once.
    tr.add("dram", "spikes", sz["a_values"] * fa)
    tr.add("dram", "weights", sz["b_values"] * fb)
    tr.add("dram", "bitmasks", sz["a_bitmask"] * fa + sz["b_bitmask"] * fb + sz["o_bitmask"])
    tr.add("dram", "outputs", sz["o_values"])
    # Buffer: PE reads (A per n-tile, B broadcast per m-tile), fills from DRAM, output writes. With
    # the dynamic schedule the lanes are on different columns: no broadcast, every row reads every
    # B fiber once (about P times the lockstep reads).
    b_reads = n_mt if cfg.schedule == "lockstep" else M
    tr.add("sram", "spikes", sz["a_values"] * (n_nt + fa))
    tr.add("sram", "weights", sz["b_values"] * (b_reads + fb))
    tr.add("sram", "bitmasks", sz["a_bitmask"] * (n_nt + fa) + sz["b_bitmask"] * (b_reads + fb) + 2 * sz["o_bitmask"])
    tr.add("sram", "outputs", 2 * sz["o_values"])
    return tr, first


def simulate_layer(words: np.ndarray, weights: np.ndarray, cfg: LoASConfig | None = None, *,
                   T: int | None = None, out_words: np.ndarray | None = None, name: str = "layer",
                   econf: EnergyConfig | None = None) -> LayerSim:
    """Simulate one layer on LoAS.

    Parameters
    ----------
    words : uint16 (M, K)      packed input spike words
    weights : int8 (K, N)
    cfg : LoASConfig           defaults to the paper's configuration
    T : int                    timesteps of the trace (defaults to cfg.timesteps)
    out_words : uint16 (M, N)  the layer's output words (from the trace), for output traffic
    name : str                 layer name in the result
    econf : EnergyConfig       energy constants (defaults to sim/configs/energy.yaml)

    Raises
    ------
    ValueError
        On operands of the wrong dtype or shape, or spike words wider than T.
    """
    cfg, T, words, weights, M, K, N = prologue(words, weights, cfg, T)
    if T > cfg.timesteps:
        raise ValueError(f"the trace has T={T} but the hardware is built for timesteps={cfg.timesteps}")
    core = _core_timing(words, weights, cfg)
    # sum_{m,n} |nz(A[m]) & nz(B[:, n])| = sum_k (non-silent words in column k) x (non-zeros in row k)
    ops = int(np.dot(np.count_nonzero(words, axis=0).astype(np.int64), np.count_nonzero(weights, axis=1).astype(np.int64)))
    sz = fiber_sizes(words, weights, T, cfg, out_words)
    tr, first = loas_traffic(sz, M, N, cfg)
    busy = np.asarray(core.busy)
    # The F side examines `lookahead` chunk pairs per cycle: at least ceil(C / L) windows per fiber.
    scanned = M * N * -(-max(1, -(-K // cfg.chunk_bits)) // cfg.lookahead)
    return finish("loas", name, M=M, K=K, N=N, T=T, compute_cycles=int(core.total), pe_busy=busy,
                  core_stalls=dict(core.stalls), effectual_ops=ops, chunks_scanned=scanned, traffic=tr,
                  cfg=cfg, econf=econf, first_tile_bytes=first,
                  detail={"loop_order": cfg.loop_order,
                          "nnz_spike_words": sz["nnz_a"], "nnz_weights": sz["nnz_b"]})


__all__ = ["LayerSim", "JoinCost", "join_cost", "prologue", "simulate_layer", "fiber_sizes", "loas_traffic", "finish",
           "OPERANDS"]
