"""Cycle-exact timing model of the TPPE and of the core's compute (hw/README.md describes the
microarchitecture both this model and the RTL in hw/ follow; keep the three in step).

Summary of the timing contract (cycle 0 = the cycle the scheduler asserts a TPPE's ``start``):

* F side (fast join + pseudo-accumulator), from cycle 0 (the accept cycle works on the job's
  payload): one cycle per match; it examines ``lookahead`` (L) chunk pairs per cycle and jumps to
  the first with a match, so a run of e empty chunk pairs before a match costs floor(e / L) cycles
  and after the last match ceil(e / L) (L = 1: ``max(1, matches)`` per chunk pair); a match is pushed into FIFO-mp/FIFO-B in its cycle unless the FIFOs are full
  (``level == depth``; a pop in the same cycle does not help).
* L side (A-side walk with the segment-base cache + correction): serves the FIFO head from the
  cycle after it was pushed; a match in segment s of chunk c costs max(0, s - reached) walk cycles
  (one segment base of ``laggy_adders`` bits per cycle), where ``reached`` is the highest segment
  of chunk c whose base is cached -- by this job or, with ``seg_cache``, by the earlier jobs on the
  same A row (mntk: columns 0..n-1) -- plus one cycle to resolve (pop) the match.
* The TPPE's result is valid at ``max(F end, last pop + 1)`` (DRAIN with FIFO-mp empty); that
  number of cycles is :func:`tppe_cycles`; the next job is accepted in that cycle.
* Core (loop order mntk), schedule ``lockstep`` (the paper's): rows in groups of P (one row per
  TPPE), for each column n all P TPPEs start together on the shared B fiber; the next column starts
  in the cycle all results are valid, so a step costs the max over the group's TPPEs. The core's
  cycle counter is the sum of the steps. Schedule ``dynamic`` (ours): a TPPE runs its row's N jobs
  back to back (each starts in the cycle the previous result is taken) and then takes the next
  row nobody has taken (TPPEs finishing in the same cycle take rows in lane order); the counter
  stops at the last result.

The model is vectorized over all output neurons; it loops over match rank (the j-th match of every
fiber at once), never over individual matches or cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config import LoASConfig

#: chunk pairs the TPPE's F side examines per cycle (LoASConfig.lookahead's default); equal to
#: hw.tppe.DEFAULT_LOOKAHEAD (a test holds them equal; sim/ does not import hw/, which needs Amaranth)
DEFAULT_LOOKAHEAD = LoASConfig.lookahead
#: lane schedules of the core (LoASConfig.schedule; hw.core.SCHEDULES, a test holds them equal)
SCHEDULES = ("lockstep", "dynamic")


@dataclass(frozen=True, eq=False)
class CoreTiming:
    """Cycles of one layer on the core.

    Attributes
    ----------
    total : int              core cycles for the whole layer (the RTL's cycle counter)
    busy : int64 (P,)        cycles each TPPE spends computing (sum of its own fiber times)
    stalls : dict            name -> cycles: ``fifo_full`` (F side blocked by full FIFOs, summed
                             over neurons), ``laggy_drain`` (result waits for the L side after the
                             F side ended), ``imbalance`` (TPPE idle waiting for the slowest of its
                             group, summed over TPPEs)
    tppe : int64 (M, N)      cycles per output neuron (:func:`tppe_cycles`)
    steps : int              number of (group, column) steps
    """

    total: int
    busy: np.ndarray
    stalls: dict = field(default_factory=dict)
    tppe: np.ndarray = None
    steps: int = 0


def _check(words, weights, cfg):
    words = np.asarray(words)
    weights = np.asarray(weights)
    if words.ndim != 2 or weights.ndim != 2 or words.shape[1] != weights.shape[0]:
        raise ValueError(f"need words (M, K) and weights (K, N); got {words.shape} and {weights.shape}")
    if not isinstance(cfg, LoASConfig):
        raise TypeError(f"cfg must be a LoASConfig, got {type(cfg).__name__}")
    cfg.check()
    return words, weights


def _walk_cycles(rows, ks, N, W, seg_bits, seg_cache):
    """Laggy walk cycles of every match (flat order: neuron (m, n) row-major, k ascending).

    A match at segment s of chunk c costs max(0, s - reached) cycles, where ``reached`` is the
    highest segment of chunk c whose base the walk has already computed: within the job, or, with
    the segment-base cache, within every earlier job on the same A row (columns 0..n-1 in mntk
    order; the cache is cleared when a job starts a new row, i.e. at n = 0)."""
    S = W // seg_bits
    if S == 1 or len(rows) == 0:
        return np.zeros(len(rows), dtype=np.int64)
    chunk = ks // W
    seg = (ks % W) // seg_bits
    C = int(chunk.max()) + 1
    owner = rows // N if seg_cache else rows  # whose walk history the match sees: row or neuron
    key = owner.astype(np.int64) * C + chunk
    order = np.argsort(key, kind="stable")  # stable: (n, k) order kept within each (owner, chunk)
    k_s = key[order]
    v = k_s * S + seg[order]
    cm = np.maximum.accumulate(v)
    prev = np.concatenate(([-1], cm[:-1]))
    reached = np.maximum(prev, k_s * S) - k_s * S  # exclusive max within the group, >= 0
    adv = np.empty(len(rows), dtype=np.int64)
    adv[order] = np.maximum(0, seg[order] - reached)
    return adv


def _fiber_timing(words, weights, cfg, seg_cache=True, lookahead=1):
    """(tau (M, N), fifo_stall (M, N), drain (M, N)) for every output neuron."""
    M, K = words.shape
    N = weights.shape[1]
    W = cfg.chunk_bits
    C = max(1, -(-K // W))
    seg_bits = cfg.laggy_adders
    D = cfg.fifo_depth
    tau = np.zeros((M, N), dtype=np.int64)
    fifo_stall = np.zeros((M, N), dtype=np.int64)
    drain = np.zeros((M, N), dtype=np.int64)
    nz_b = np.zeros((C * W, N), dtype=bool)
    nz_b[:K] = weights != 0
    # Row blocks bound the (rows, N, K) match tensor to a few tens of MB.
    block = max(1, int(2**25 // max(1, N * C * W)))
    for m0 in range(0, M, block):
        nz_a = np.zeros((min(block, M - m0), C * W), dtype=bool)
        nz_a[:, :K] = words[m0 : m0 + block] != 0
        match = nz_a[:, None, :] & nz_b.T[None, :, :]  # (Mb, N, CW)
        Mb = match.shape[0]
        flat = match.reshape(Mb * N, C * W)
        R = flat.shape[0]
        per_chunk = flat.reshape(R, C, W).sum(axis=2)
        J = per_chunk.sum(axis=1)
        L = lookahead
        matched = per_chunk > 0
        # Empty cycles of the F side: a gap of e empty chunk pairs before a matched chunk costs
        # floor(e / L) cycles (the window of L chunk pairs jumps to the first match in it; a
        # window with no match costs a cycle and moves on by L), trailing empties ceil(e / L).
        idx = np.arange(C)[None, :]
        prev_m = np.maximum.accumulate(np.where(matched, idx, -1), axis=1)
        prev_m = np.concatenate((np.full((R, 1), -1), prev_m[:, :-1]), axis=1)  # last matched < c
        gap_cost = np.where(matched, (idx - prev_m - 1) // L, 0)
        empties_before = np.cumsum(gap_cost, axis=1)  # empty cycles before a matched chunk's first match
        jmax = int(J.max(initial=0))
        rows, ks = np.nonzero(flat)  # row-major: k ascending within each neuron
        rank = np.arange(len(rows)) - np.concatenate(([0], np.cumsum(J)))[rows]
        pos = np.zeros((R, max(jmax, 1)), dtype=np.int64)
        pos[rows, rank] = ks
        walk = np.zeros((R, max(jmax, 1)), dtype=np.int64)
        walk[rows, rank] = _walk_cycles(rows, ks, N, W, seg_bits, seg_cache)
        chunk = pos // W
        phi = np.arange(pos.shape[1])[None, :] + np.take_along_axis(empties_before, chunk, axis=1)
        r_hist = np.zeros((R, max(jmax, 1)), dtype=np.int64)
        u = np.zeros(R, dtype=np.int64)
        r = np.full(R, -(10**9), dtype=np.int64)
        stall = np.zeros(R, dtype=np.int64)
        for j in range(jmax):
            live = j < J
            if j == 0:
                u_free = phi[:, 0]  # the F side runs in the accept cycle (cycle 0)
            else:
                u_free = u + phi[:, j] - phi[:, j - 1]
            u_new = u_free
            if j >= D:
                u_new = np.maximum(u_free, r_hist[:, j - D] + 1)
            r_new = np.maximum(u_new + 1, r + 1) + walk[:, j]
            stall = np.where(live, stall + (u_new - u_free), stall)
            u = np.where(live, u_new, u)
            r = np.where(live, r_new, r)
            r_hist[:, j] = r
        last_chunk = np.where(J > 0, np.take_along_axis(chunk, np.maximum(J - 1, 0)[:, None], axis=1)[:, 0], 0)
        e_trail = C - 1 - last_chunk
        f_end = np.where(J > 0, u + 1 + -(-e_trail // L), -(-C // L))
        l_end = np.where(J > 0, r + 1, 0)  # DRAIN with FIFO-mp empty: the last correction registered
        d = np.maximum(f_end, l_end)
        sl = slice(m0, m0 + Mb)
        tau[sl] = d.reshape(Mb, N)
        fifo_stall[sl] = stall.reshape(Mb, N)
        drain[sl] = np.maximum(l_end - f_end, 0).reshape(Mb, N)
    return tau, fifo_stall, drain


def _check_lookahead(lookahead, cfg):
    if lookahead is None:
        return cfg.lookahead
    if isinstance(lookahead, bool) or not isinstance(lookahead, (int, np.integer)):
        raise TypeError(f"lookahead must be an int, got {type(lookahead).__name__}")
    if not 1 <= lookahead <= 16:
        raise ValueError(f"lookahead must be in 1..16, got {lookahead}")
    return int(lookahead)


def tppe_cycles(words, weights, cfg: LoASConfig, *, seg_cache: bool = True,
                lookahead: int | None = None) -> np.ndarray:
    """Cycles of one TPPE for every output neuron: int64 (M, N), from its start to its valid result.

    Parameters
    ----------
    words : uint16 (M, K)   packed spike words (only non-zero-ness matters for timing)
    weights : int8 (K, N)   weights (only non-zero-ness matters)
    cfg : LoASConfig        chunk_bits, laggy_adders and fifo_depth are used
    seg_cache : bool        the TPPE keeps the segment bases its walk computed for the resident A
                            row (hw TPPE ``seg_cache``); jobs run in mntk order (row m's columns
                            0..N-1 one after the other, n = 0 starting the row)
    lookahead : int         chunk pairs the F side examines per cycle (hw TPPE ``lookahead``); None =
                            ``cfg.lookahead``; 1 = one cycle per empty chunk pair

    Raises
    ------
    ValueError on mismatched shapes or an invalid configuration; TypeError when cfg is not a LoASConfig.
    """
    words, weights = _check(words, weights, cfg)
    if not isinstance(seg_cache, bool):
        raise TypeError(f"seg_cache must be a bool, got {type(seg_cache).__name__}")
    return _fiber_timing(words, weights, cfg, seg_cache, _check_lookahead(lookahead, cfg))[0]


def _dynamic(tau: np.ndarray, P: int) -> tuple[int, np.ndarray]:
    """List schedule of whole rows on P lanes (schedule ``dynamic``): (total cycles, busy (P,)).

    A lane that finishes its row at cycle t takes the next row in that cycle; lanes finishing in the
    same cycle take rows in lane order (the heap orders (t, lane)). One heap step per row, not per
    match or cycle."""
    import heapq

    dur = tau.sum(axis=1)
    heap = [(0, i) for i in range(P)]
    busy = np.zeros(P, dtype=np.int64)
    for d in dur.tolist():
        t, i = heapq.heappop(heap)
        busy[i] += d
        heapq.heappush(heap, (t + d, i))
    return int(max(t for t, _ in heap)), busy


def core_cycles(words, weights, cfg: LoASConfig, *, seg_cache: bool = True,
                lookahead: int | None = None, schedule: str | None = None) -> CoreTiming:
    """Cycles of the core (P = cfg.pes TPPEs, loop order mntk) for one whole layer.

    ``lockstep``: rows are taken in groups of P (row g*P + i on TPPE i); for each group every
    column n is one step costing the max over the group's TPPEs; rows past M leave their TPPE idle.
    ``dynamic``: whole rows are list-scheduled on the P TPPEs (module docstring).

    ``seg_cache`` and ``lookahead`` as :func:`tppe_cycles`; ``schedule`` None = ``cfg.schedule``
    (hw Core parameters of the same names).

    Raises
    ------
    ValueError / TypeError as :func:`tppe_cycles`.
    """
    words, weights = _check(words, weights, cfg)
    if not isinstance(seg_cache, bool):
        raise TypeError(f"seg_cache must be a bool, got {type(seg_cache).__name__}")
    if cfg.loop_order != "mntk":
        raise ValueError(f"loop_order: the core implements 'mntk' only, got {cfg.loop_order!r}")
    schedule = cfg.schedule if schedule is None else schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule: must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    tau, fifo_stall, drain = _fiber_timing(words, weights, cfg, seg_cache, _check_lookahead(lookahead, cfg))
    M, N = tau.shape
    P = cfg.pes
    stalls = {"fifo_full": int(fifo_stall.sum()), "laggy_drain": int(drain.sum())}
    if schedule == "dynamic":
        total, busy = _dynamic(tau, P)
        return CoreTiming(total=total, busy=busy, stalls={**stalls, "imbalance": int(total * P - busy.sum())},
                          tppe=tau, steps=int(M * N))
    G = -(-M // P)
    padded = np.zeros((G * P, N), dtype=np.int64)
    padded[:M] = tau
    grouped = padded.reshape(G, P, N)
    step = grouped.max(axis=1)  # (G, N)
    busy = grouped.sum(axis=(0, 2))
    live = np.zeros((G * P,), dtype=bool)
    live[:M] = True
    live = live.reshape(G, P)[:, :, None]
    imbalance = int(((step[:, None, :] - grouped) * live).sum())
    return CoreTiming(
        total=int(step.sum()),
        busy=busy.astype(np.int64),
        stalls={**stalls, "imbalance": imbalance},
        tppe=tau,
        steps=int(G * N),
    )
