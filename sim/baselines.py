"""The accelerators LoAS is compared with (spec/loas.md section 8), on the same trace input.

Common assumptions (ours, following the paper's setup):

* Same PE count (``cfg.pes``), clock, DRAM bandwidth and global-buffer budget as LoAS
  (``cfg.buffer``), same memory model (:mod:`sim.memory`), GEMM (im2col) view of every layer.
* Multipliers removed: spikes are binary, so a "multiply" is an add of the weight.
* The dual-sparse ANN designs process timesteps one after another (``t`` is the outermost loop: the
  ANN accelerator runs the layer once per timestep on the binary spike plane A[t]). Between
  timesteps the membrane potentials U (M x N values of ``MEMBRANE_BITS``) are written to and read
  back from the buffer (spilling to DRAM beyond half of it). Spike planes are binary, so their
  fibers carry no values: a bitmask (or coordinates) only.
* ``effectual_ops`` of a per-timestep design counts spike x non-zero-weight pairs summed over t
  (>= LoAS's match count: a non-silent word holds at least one spike).
* Output spikes are stored per timestep (a bitmask per plane, or coordinates for Gamma-S).

Each design's own assumptions are written next to its function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.config import LoASConfig
from sim.energy import EnergyConfig
from sim.result import LayerSim, finish, prologue
from sim.memory import Traffic, capacity_bytes, nbytes, refetch_bytes, spill_bytes

MEMBRANE_BITS = 16  # ours: the paper's 12-bit accumulators rounded up to a whole number of bytes
PTR_BITS = 32  # CSR row pointer
GAMMA_RADIX = 64  # Gamma's merger merges up to 64 fibers per pass
GAMMA_FILL = 6  # log2(64) merger-tree pipeline cycles per row


# Inner join statistics of the inner-product baselines (vectorized) --------------------------------
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


def _planes(words: np.ndarray, T: int):
    for t in range(T):  # T <= 16 planes, each fully vectorized
        yield ((words >> np.uint16(t)) & 1).astype(bool)


def _out_spikes(words, out_words, M, N) -> int:
    """Output spikes of the layer (from the trace's outputs; else the input's spike density)."""
    if out_words is not None:
        return int(np.bitwise_count(np.asarray(out_words, np.uint16)).sum(dtype=np.int64))
    return int(round(np.bitwise_count(words).sum(dtype=np.int64) / max(1, words.size) * M * N))


def _membrane(tr: Traffic, M: int, N: int, T: int, cap: float) -> None:
    """U written after every timestep and read before every timestep but the first."""
    size = M * N * MEMBRANE_BITS / 8
    acc = (2 * T - 1) * size
    tr.add("sram", "psums", acc)
    tr.add("dram", "psums", spill_bytes(size, acc, cap / 2))


def _out_bitmask_planes(tr: Traffic, M: int, N: int, T: int, chunk: int) -> None:
    bits = T * M * (-(-N // chunk) * chunk)
    tr.add("sram", "bitmasks", 2 * nbytes(bits))  # written by the PEs, read out to DRAM
    tr.add("dram", "bitmasks", nbytes(bits))


def sparten(words, weights, cfg: LoASConfig | None = None, *, T=None, out_words=None, name="layer",
            econf: EnergyConfig | None = None) -> LayerSim:
    """SparTen-S: SparTen (MICRO 2019) inner product with a bitmask inner join, once per timestep.

    Assumptions: the PE is LoAS's TPPE without the laggy side (SparTen has a fast prefix-sum on both
    operands): ``max(1, matches)`` cycles per chunk pair, 2 cycles per output; same core schedule
    as LoAS (P rows per group, one shared weight fiber per step, a step costs its slowest PE); the
    A plane's bitmask tile stays resident, weight fibers are swept once per row group per
    timestep; membrane potentials cross timesteps through the buffer.
    """
    cfg, T, words, weights, M, K, N = prologue(words, weights, cfg, T)
    nz_b = weights != 0
    cycles, ops, scanned = 0, 0, 0
    busy = np.zeros(cfg.pes, np.int64)
    for plane in _planes(words, T):
        jc = join_cost(plane, nz_b, chunk=cfg.chunk_bits, pes=cfg.pes)
        cycles += jc.cycles
        busy += jc.busy
        ops += jc.matches
        scanned += jc.scanned
    sz = fiber_sizes(words, weights, T, cfg, out_words)
    cap = capacity_bytes(cfg)
    n_mt, n_nt = -(-M // cfg.tile.m), -(-N // cfg.tile.n)
    tr = Traffic()
    size_b = sz["b_bitmask"] + sz["b_values"]
    a_plane_tile = sz["a_bitmask"] * min(1.0, cfg.tile.m / M)
    fb = refetch_bytes(size_b, T * n_mt, cap / 2 - a_plane_tile) / max(1, size_b)
    tr.add("dram", "bitmasks", T * sz["a_bitmask"] + fb * sz["b_bitmask"])
    tr.add("dram", "weights", fb * sz["b_values"])
    tr.add("sram", "bitmasks", T * sz["a_bitmask"] * (n_nt + 1) + (T * n_mt + fb) * sz["b_bitmask"])
    tr.add("sram", "weights", (T * n_mt + fb) * sz["b_values"])
    _membrane(tr, M, N, T, cap)
    _out_bitmask_planes(tr, M, N, T, cfg.chunk_bits)
    return finish("sparten", name, M=M, K=K, N=N, T=T, compute_cycles=cycles, pe_busy=busy,
                  core_stalls={"imbalance": int(cycles * cfg.pes - busy.sum())}, effectual_ops=ops,
                  chunks_scanned=scanned, traffic=tr, cfg=cfg, econf=econf,
                  first_tile_bytes=a_plane_tile + size_b * min(1.0, cfg.tile.n / N))


def gospa(words, weights, cfg: LoASConfig | None = None, *, T=None, out_words=None, name="layer",
          econf: EnergyConfig | None = None) -> LayerSim:
    """GoSPA-S: GoSPA (ISCA 2021) outer-product style with on-the-fly intersection, per timestep.

    Assumptions: for every k the non-zero spikes of column A[t][:, k] meet the non-zero weights of
    row B[k, :]; their a_k * b_k products are spread over the P PEs (steps with a_k * b_k = 0 are
    skipped by the intersection), so a step takes ceil(a_k * b_k / P_eff) cycles. Every product is a
    partial-sum read-modify-write in the banked accumulation buffer ("merged through memory"):
    P random updates hit ``banks * (1 - (1 - 1/banks)^P)`` distinct banks per cycle on average,
    which is P_eff. Partial sums (MEMBRANE_BITS each) live in half the buffer and spill to DRAM
    beyond it. Index generation costs 30 % extra compute energy (energy.yaml). PE busy cycles are
    taken as evenly spread.
    """
    cfg, T, words, weights, M, K, N = prologue(words, weights, cfg, T)
    banks, P = cfg.buffer.banks, cfg.pes
    p_eff = min(float(P), banks * (1.0 - (1.0 - 1.0 / banks) ** P))
    b_rows = np.count_nonzero(weights, axis=1).astype(np.int64)  # (K,)
    cycles, ops = 0, 0
    for plane in _planes(words, T):
        a_cols = plane.sum(axis=0, dtype=np.int64)  # (K,)
        prod = a_cols * b_rows
        cycles += int(np.ceil(prod[prod > 0] / p_eff).sum())
        ops += int(prod.sum())
    sz = fiber_sizes(words, weights, T, cfg, out_words)
    cap = capacity_bytes(cfg)
    tr = Traffic()
    size_b = sz["b_bitmask"] + sz["b_values"]
    fb = refetch_bytes(size_b, T, cap / 4) / max(1, size_b)
    tr.add("dram", "bitmasks", T * sz["a_bitmask"] + fb * sz["b_bitmask"])
    tr.add("dram", "weights", fb * sz["b_values"])
    tr.add("sram", "bitmasks", 2 * T * sz["a_bitmask"] + (T + fb) * sz["b_bitmask"])
    tr.add("sram", "weights", (T + fb) * sz["b_values"])
    psum_size = M * N * MEMBRANE_BITS / 8
    rmw = 2 * ops * MEMBRANE_BITS / 8
    tr.add("sram", "psums", rmw)
    tr.add("dram", "psums", spill_bytes(psum_size, rmw, cap / 2))
    _membrane(tr, M, N, T, cap)
    _out_bitmask_planes(tr, M, N, T, cfg.chunk_bits)
    busy = np.full(P, -(-ops // P), np.int64)
    return finish("gospa", name, M=M, K=K, N=N, T=T, compute_cycles=cycles, pe_busy=busy,
                  core_stalls={"bank_conflicts": int(cycles * P - ops)}, effectual_ops=ops, chunks_scanned=0,
                  traffic=tr, cfg=cfg, econf=econf, first_tile_bytes=size_b * min(1.0, cfg.tile.n / N),
                  detail={"p_eff": p_eff})


def gamma(words, weights, cfg: LoASConfig | None = None, *, T=None, out_words=None, name="layer",
          econf: EnergyConfig | None = None) -> LayerSim:
    """Gamma-S: Gamma (ASPLOS 2021) Gustavson row-wise product with merger and FiberCache, per timestep.

    Assumptions: a PE takes a whole row A[t][m, :] and merges the weight rows B[k, :] of its
    spikes with a radix-64 merger at one input element per cycle, plus a 6-cycle pipeline fill per
    row; rows with more than 64 spikes need extra merge rounds whose partial output fibers (at most
    N elements each) go through the FiberCache ("psums") and are merged again. Rows are handed to
    the first free PE, so a timestep takes max(sum of row costs / P, longest row). Fibers use
    coordinates (Gamma's format): weight rows in CSR (weight_bits + log2 N bits per non-zero,
    32-bit row pointers), spike rows as log2 K-bit coordinates, output spikes as log2 N-bit
    coordinates. Weight rows are fetched from the FiberCache for every use; DRAM sees each weight
    row once per timestep unless the CSR weights fit beside the other operands.
    """
    cfg, T, words, weights, M, K, N = prologue(words, weights, cfg, T)
    P = cfg.pes
    b_rows = np.count_nonzero(weights, axis=1).astype(np.int64)  # (K,)
    cycles, ops, extra_total, busy_total = 0, 0, 0, 0
    spikes = 0
    for plane in _planes(words, T):
        nfib = plane.sum(axis=1, dtype=np.int64)  # (M,)
        work = np.dot(plane.astype(np.int64), b_rows)  # integer dot: exact, no BLAS
        rounds = np.where(nfib > 1, np.ceil(np.log(np.maximum(nfib, 2)) / math.log(GAMMA_RADIX) - 1e-12), 1)
        extra = (np.maximum(rounds, 1).astype(np.int64) - 1) * np.minimum(work, N)
        cost = np.where(nfib > 0, work + extra + GAMMA_FILL, 0)
        total = int(cost.sum())
        cycles += max(-(-total // P), int(cost.max(initial=0)))
        ops += int(work.sum())
        extra_total += int(extra.sum())
        busy_total += total
        spikes += int(nfib.sum())
    cap = capacity_bytes(cfg)
    cb_k, cb_n = max(1, math.ceil(math.log2(max(K, 2)))), max(1, math.ceil(math.log2(max(N, 2))))
    nnz_b = int(np.count_nonzero(weights))
    elem = cfg.weight_bits + cb_n
    size_b = nbytes(nnz_b * elem + K * PTR_BITS)
    tr = Traffic()
    fb = refetch_bytes(size_b, T, cap / 2) / max(1, size_b)
    tr.add("dram", "weights", fb * size_b)
    tr.add("sram", "weights", nbytes(ops * elem) + fb * size_b)
    a_bytes = nbytes(spikes * cb_k + T * M * PTR_BITS)
    tr.add("dram", "spikes", a_bytes)
    tr.add("sram", "spikes", 2 * a_bytes)
    tr.add("sram", "psums", 2 * extra_total * MEMBRANE_BITS / 8)
    _membrane(tr, M, N, T, cap)
    o_bytes = nbytes(_out_spikes(words, out_words, M, N) * cb_n + T * M * PTR_BITS)
    tr.add("sram", "outputs", 2 * o_bytes)
    tr.add("dram", "outputs", o_bytes)
    busy = np.full(P, -(-busy_total // P), np.int64)
    return finish("gamma", name, M=M, K=K, N=N, T=T, compute_cycles=cycles, pe_busy=busy,
                  core_stalls={"imbalance": int(max(0, cycles * P - busy_total))}, effectual_ops=ops,
                  chunks_scanned=0, traffic=tr, cfg=cfg, econf=econf,
                  first_tile_bytes=size_b * min(1.0, cfg.tile.n / N),
                  detail={"merge_extra_elements": extra_total})


def _dense_weight(design: str, words, weights, cfg, T, out_words, name, econf) -> LayerSim:
    cfg, T, words, weights, M, K, N = prologue(words, weights, cfg, T)
    P = cfg.pes
    row_words = np.count_nonzero(words, axis=1).astype(np.int64)  # (M,)
    passes = -(-N // P)
    cycles = int(row_words.sum()) * passes
    ops = int(row_words.sum()) * N  # T-lane accumulations of one weight, zeros included
    spikes = int(np.bitwise_count(words).sum(dtype=np.int64))
    cap = capacity_bytes(cfg)
    n_mt = -(-M // cfg.tile.m)
    w_bytes = K * N * cfg.weight_bits / 8
    tr = Traffic()
    sz = fiber_sizes(words, weights, T, cfg, out_words)
    if design == "ptb":
        # PTB: spikes of a time window stored as raw T-bit words (no compression); weights swept per
        # row tile, each non-silent word reads its dense weight row once per pass of P channels.
        a_dram = nbytes(T * M * K)
        tr.add("dram", "spikes", a_dram)
        tr.add("sram", "spikes", a_dram * (passes + 1))
        fw = refetch_bytes(w_bytes, n_mt, cap / 2) / max(1.0, w_bytes)
        tr.add("sram", "weights", row_words.sum() * N * cfg.weight_bits / 8 + fw * w_bytes)
        energy_ops = ops
    else:
        # Stellar: spikes compressed (bitmask + packed words, as LoAS), weight-stationary: a P-channel
        # weight slice stays in the PEs while all rows stream past; silent timestep lanes are gated.
        tr.add("dram", "spikes", sz["a_values"])
        tr.add("dram", "bitmasks", sz["a_bitmask"])
        tr.add("sram", "spikes", sz["a_values"] * (passes + 1))
        tr.add("sram", "bitmasks", sz["a_bitmask"] * (passes + 1))
        fw = refetch_bytes(w_bytes, 1, cap / 2) / max(1.0, w_bytes)
        tr.add("sram", "weights", 2 * w_bytes)
        energy_ops = spikes * N
    tr.add("dram", "weights", fw * w_bytes)
    o_bytes = nbytes(T * M * N)  # dense output spike planes
    tr.add("sram", "outputs", 2 * o_bytes)
    tr.add("dram", "outputs", o_bytes)
    busy = np.full(P, int(row_words.sum()) * N // P, np.int64)
    return finish(design, name, M=M, K=K, N=N, T=T, compute_cycles=cycles, pe_busy=busy,
                  core_stalls={"idle_channels": int(max(0, cycles * P - busy.sum()))}, effectual_ops=ops,
                  chunks_scanned=0, traffic=tr, cfg=cfg, econf=econf, energy_ops=energy_ops,
                  first_tile_bytes=w_bytes * min(1.0, P / N),
                  detail={"spikes": spikes, "non_silent_words": int(row_words.sum())})


def ptb(words, weights, cfg: LoASConfig | None = None, *, T=None, out_words=None, name="layer",
        econf: EnergyConfig | None = None) -> LayerSim:
    """PTB (HPCA 2022): parallel time batching, dense weights, for the energy comparison.

    Assumptions: the T timesteps of a window are processed together in T lanes; the P PEs hold P
    output channels; every non-silent spike word (m, k) broadcasts its T bits and each PE adds its
    weight B[k, n] in all lanes (one cycle per word per pass of P channels, zero weights included:
    no weight sparsity). Spikes are stored raw (T bits per position), weights dense (8 bit),
    output spikes as dense planes. An operation (energy) is one T-lane accumulation.
    """
    return _dense_weight("ptb", words, weights, cfg, T, out_words, name, econf)


def stellar(words, weights, cfg: LoASConfig | None = None, *, T=None, out_words=None, name="layer",
            econf: EnergyConfig | None = None) -> LayerSim:
    """Stellar (HPCA 2024): spatio-temporal dense-weight SNN accelerator, for the energy comparison.

    Assumptions: the same time-parallel schedule as PTB (one cycle per non-silent word per pass of P
    channels), but spikes are stored compressed (bitmask + packed words) and the lanes of silent
    timesteps are gated, so an operation (energy) is one spike times one weight; weight-stationary
    (each weight read from DRAM and the buffer about once). Dense weights: no weight sparsity.
    """
    return _dense_weight("stellar", words, weights, cfg, T, out_words, name, econf)


def simulate(design: str, words, weights, cfg: LoASConfig | None = None, **kw) -> LayerSim:
    """Simulate one layer on the named design (the registry :mod:`sim.designs`)."""
    from sim.designs import simulate as _simulate

    return _simulate(design, words, weights, cfg, **kw)
