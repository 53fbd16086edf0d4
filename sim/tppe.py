"""Cycle-exact timing model of the TPPE and of the core's compute (hw/README.md describes the
microarchitecture both this model and the RTL in hw/ follow; keep the three in step).

Summary of the timing contract (cycle 0 = the cycle a row's first job is accepted):

* F side (fast join + pseudo-accumulator), from its accept cycle (which works on the job's
  payload): one cycle per match; it examines ``lookahead`` (L) chunk pairs per cycle and jumps to
  the first with a match, so a run of e empty chunk pairs before a match costs floor(e / L)
  cycles; it ends on the last match when that cycle's window reaches past the fiber, else after
  ceil(e / L) more cycles for the trailing empty chunk pairs (a fiber with no match: ceil(C / L)
  cycles). A match is pushed into FIFO-mp/FIFO-B in its cycle unless the FIFOs are full
  (``level == depth``; a pop in the same cycle does not help). The F side's last cycle needs a
  free result slot (``result_slots`` Q): job k may end only from the cycle job k - Q's result is
  taken. The next job of the row is accepted in the cycle after (lockstep: after the slowest lane).
* L side (A-side walk with the segment-base cache + correction), one FIFO across jobs: serves the
  FIFO head from the cycle after it was pushed; a match in segment s of chunk c costs
  max(0, s - reached) walk cycles (one segment base of ``laggy_adders`` bits per cycle), where
  ``reached`` is the highest segment of chunk c whose base is cached -- by earlier matches of the
  row (or of the job without ``seg_cache``) -- plus one cycle to resolve (pop) the match.
* Job k's result is valid (and taken: ``out.ready`` high) at max(F end + 1, its last pop + 1,
  job k - 1's result + 1). A row's first job (and every job without ``seg_cache``) is accepted
  only in the cycle the lane's last result is taken, so rows are independent of each other.
* Row prefetch (``row_prefetch``, with ``seg_cache`` and a walk to hide): a lane claims its next
  row when it starts one; the TPPE's walk unit fills a second segment-base bank with every base of
  that row in C * (S - 1) cycles (S = segments per chunk), so the row's matches never walk. Rows
  0..P-1 start cold; a later row starts no earlier than 2 + C * (S - 1) cycles after the lane's
  previous row started (``walk_wait``).
* Core (loop order mntk), ``lockstep`` (the paper's): rows in groups of P; the lanes accept each
  column together on the shared B fiber; a group starts when every lane with a row in it has taken
  its last result. ``dynamic`` (ours): a lane runs its row's jobs back to back and then starts the
  row it claimed when it started the current one (lanes starting in the same cycle claim in lane
  order). The counter stops at the last result.

The model is vectorized over rows; it loops over columns and match rank (the j-th match of column
n of every row at once), never over individual matches or cycles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config import LoASConfig
from sim.params import CoreParams


@dataclass(frozen=True, eq=False)
class CoreTiming:
    """Cycles of one layer on the core.

    Attributes
    ----------
    total : int              core cycles for the whole layer (the RTL's cycle counter)
    busy : int64 (P,)        cycles each TPPE spends computing (sum of its own fiber times)
    stalls : dict            name -> cycles summed over jobs: ``fifo_full`` (F side blocked by full
                             FIFOs), ``result_slots`` (F side's last cycle waiting for a free result
                             slot, i.e. for the L side), ``row_drain`` (a row's last result after its
                             last F cycle), ``walk_wait`` (lane cycles between a row's end and the
                             next row's start waiting for the walk unit), ``imbalance`` (the other
                             idle TPPE cycles: total * P - busy - walk_wait)
    tppe : int64 (M, N)      cycles each job holds its TPPE (accept to the F side's last cycle; the
                             row's last job until its last result); rows sum to their cycles
    steps : int              number of (group, column) steps
    """

    total: int
    busy: np.ndarray
    stalls: dict = field(default_factory=dict)
    tppe: np.ndarray = None
    steps: int = 0


def _check(words, weights, cfg, mntk=False, **override):
    """(words, weights, CoreParams): ``cfg`` a CoreParams or a LoASConfig (its core), ``override``
    the keyword arguments given (None = the parameters' own)."""
    words = np.asarray(words)
    weights = np.asarray(weights)
    if words.ndim != 2 or weights.ndim != 2 or words.shape[1] != weights.shape[0]:
        raise ValueError(f"need words (M, K) and weights (K, N); got {words.shape} and {weights.shape}")
    if isinstance(cfg, LoASConfig):
        if mntk and cfg.loop_order != "mntk":
            raise ValueError(f"loop_order: the core implements 'mntk' only, got {cfg.loop_order!r}")
        cfg = CoreParams.from_config(cfg)
    elif not isinstance(cfg, CoreParams):
        raise TypeError(f"cfg must be a CoreParams or a LoASConfig, got {type(cfg).__name__}")
    return words, weights, cfg.replace(**{k: v for k, v in override.items() if v is not None})


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


def _fiber_static(words, weights, cfg, seg_cache, L, warm, unit):
    """Per output neuron, what does not depend on when its job starts, for row blocks.

    Rows where ``warm`` (bool (M,)) start with every segment base cached (the walk unit prefetched
    them): their matches never walk. Blocks are whole multiples of ``unit`` rows (lane groups, or
    tiles).

    Yields (m0, J (Mb, N), phi (Mb, N, jmax), walk (Mb, N, jmax), tail (Mb, N), early (Mb, N)):
    J matches; phi[j] the F cycle of match j counted from the accept cycle without stalls; walk[j]
    its laggy walk cycles; with J > 0, ``early`` when the F side ends on the last match (its window
    reaches past the fiber) and else ``tail`` = the empty-window cycles after it; with J = 0,
    ``tail`` = ceil(C / L) - 1 (the F side's last cycle, counted from the accept cycle)."""
    M, K = words.shape
    N = weights.shape[1]
    W = cfg.chunk_bits
    C = max(1, -(-K // W))
    nz_b = np.zeros((C * W, N), dtype=bool)
    nz_b[:K] = weights != 0
    # Row blocks bound the (rows, N, K) match tensor to a few tens of MB; whole lane groups.
    block = max(1, int(2**25 // max(1, N * C * W)))
    block = max(unit, block // unit * unit)
    for m0 in range(0, M, block):
        nz_a = np.zeros((min(block, M - m0), C * W), dtype=bool)
        nz_a[:, :K] = words[m0 : m0 + block] != 0
        match = nz_a[:, None, :] & nz_b.T[None, :, :]  # (Mb, N, CW)
        Mb = match.shape[0]
        flat = match.reshape(Mb * N, C * W)
        R = flat.shape[0]
        per_chunk = flat.reshape(R, C, W).sum(axis=2)
        J = per_chunk.sum(axis=1)
        matched = per_chunk > 0
        # Empty cycles of the F side: a gap of e empty chunk pairs before a matched chunk costs
        # floor(e / L) cycles (the window of L chunk pairs jumps to the first match in it; a
        # window with no match costs a cycle and moves on by L).
        idx = np.arange(C)[None, :]
        prev_m = np.maximum.accumulate(np.where(matched, idx, -1), axis=1)
        prev_m = np.concatenate((np.full((R, 1), -1), prev_m[:, :-1]), axis=1)  # last matched < c
        gap_cost = np.where(matched, (idx - prev_m - 1) // L, 0)
        empties_before = np.cumsum(gap_cost, axis=1)  # empty cycles before a matched chunk's first match
        jmax = max(1, int(J.max(initial=0)))
        rows, ks = np.nonzero(flat)  # row-major: k ascending within each neuron
        rank = np.arange(len(rows)) - np.concatenate(([0], np.cumsum(J)))[rows]
        pos = np.zeros((R, jmax), dtype=np.int64)
        pos[rows, rank] = ks
        walk = np.zeros((R, jmax), dtype=np.int64)
        walk[rows, rank] = _walk_cycles(rows, ks, N, W, cfg.laggy_adders, seg_cache)
        walk.reshape(Mb, N, jmax)[warm[m0:m0 + Mb]] = 0
        chunk = pos // W
        phi = np.arange(jmax)[None, :] + np.take_along_axis(empties_before, chunk, axis=1)
        # The window the last match is found in starts at its chunk when an earlier match of the
        # same chunk moved the F side there, else at c_prev + 1 + L * floor(gap / L).
        jl = np.maximum(J - 1, 0)[:, None]
        c_last = np.take_along_axis(chunk, jl, axis=1)[:, 0]
        c_before = np.where(J >= 2, np.take_along_axis(chunk, np.maximum(J - 2, 0)[:, None], axis=1)[:, 0], -1)
        c_prev = np.take_along_axis(prev_m, c_last[:, None], axis=1)[:, 0]
        w0 = np.where(c_before == c_last, c_last, c_last - (c_last - c_prev - 1) % L)
        early = (J > 0) & (w0 + L >= C)
        tail = np.where(J > 0, np.where(early, 0, -(-(C - 1 - c_last) // L)), -(-C // L) - 1)
        yield m0, J.reshape(Mb, N), phi.reshape(Mb, N, jmax), walk.reshape(Mb, N, jmax), \
            tail.reshape(Mb, N), early.reshape(Mb, N)


_NEG = -(1 << 40)


def _rows_timing(J, phi, walk, tail, early, cfg, lockstep, seg_cache, starts=None):
    """Pipelined timing of the N jobs of each row of a block (hw/README.md "Timing").

    Vectorized over rows; loops over columns and match rank. Lockstep lane groups start at rows
    ``starts`` of the block (None: every P rows). Returns (occupancy (Mb, N): cycles
    each job holds its TPPE's F side, the row's final drain added to its last job; row_end (Mb,):
    cycle the row's last result is taken, counted from its first accept; stalls dict)."""
    Mb, N, _ = phi.shape
    D, Q, P = cfg.fifo_depth, cfg.result_slots, cfg.pes
    ri = np.arange(Mb)
    a = np.zeros(Mb, dtype=np.int64)  # accept cycle of the current job
    taus = np.full((Mb, Q), _NEG, dtype=np.int64)  # results of the last Q jobs (ring)
    tau = np.full(Mb, _NEG, dtype=np.int64)
    rh = np.full((Mb, D), _NEG, dtype=np.int64)  # pop cycles of the last D FIFO entries (ring)
    g = np.zeros(Mb, dtype=np.int64)  # FIFO entries so far
    r_last = np.full(Mb, _NEG, dtype=np.int64)
    occ = np.zeros((Mb, N), dtype=np.int64)
    fifo_stall = slot_stall = 0
    starts = np.arange(0, Mb, P) if starts is None else starts
    sizes = np.diff(np.append(starts, Mb))
    for n in range(N):
        Jn = J[:, n]
        has = Jn > 0
        tq = taus[:, n % Q]  # result of job n - Q: a slot is free only once it is taken
        u = a
        pre = a  # the last match's push cycle before waiting for a result slot (early finish)
        for j in range(int(Jn.max(initial=0))):
            live = j < Jn
            u_free = a + phi[:, n, 0] if j == 0 else u + phi[:, n, j] - phi[:, n, j - 1]
            slot = g % D
            u_f = np.maximum(u_free, rh[ri, slot] + 1)  # FIFOs full until entry g - D pops
            ends = live & (j == Jn - 1) & early[:, n]  # this push is the F side's last cycle
            u_new = np.where(ends, np.maximum(u_f, tq), u_f)
            r_new = np.maximum(u_new + 1, r_last + 1) + walk[:, n, j]
            if j == 0:  # a job's first correction waits until the previous result has left
                r_new = np.maximum(r_new, tau)
            fifo_stall += int(np.where(live, u_f - u_free, 0).sum())
            pre = np.where(ends, u_f, pre)
            u = np.where(live, u_new, u)
            r_last = np.where(live, r_new, r_last)
            rh[ri[live], slot[live]] = r_new[live]
            g += live
        # The F side's last cycle without waiting for a slot, then with (an early last push already
        # waited in the loop: u = max(pre, tq)).
        free = np.where(has & early[:, n], pre, np.where(has, u + tail[:, n], a + tail[:, n]))
        fl = np.maximum(free, tq)
        slot_stall += int((fl - free).sum())
        tau = np.maximum(np.maximum(fl + 1, tau + 1), np.where(has, r_last + 1, _NEG))
        taus[:, n % Q] = tau
        # Without the segment-base cache every job clears it, so it waits like a new row's job for
        # the lane's results (FIFO empty).
        own = fl + 1 if seg_cache else tau
        occ[:, n] = own - a
        nxt = own
        if lockstep:  # all lanes of a group accept the next column together
            nxt = np.repeat(np.maximum.reduceat(nxt, starts), sizes)
        a = nxt
    # A job on a new row waits for the lane's last result (FIFO empty, result slots free).
    occ[:, N - 1] += tau - own
    stalls = {"fifo_full": fifo_stall, "result_slots": slot_stall, "row_drain": int((tau - fl - 1).sum())}
    return occ, tau, stalls


def _prefetch_cycles(cfg, seg_cache, C):
    """Cycles from a lane's row start until its walk unit has filled the next row's bank (the
    next row's first job may be accepted from then on); 0 without a walk unit."""
    S = cfg.chunk_bits // cfg.laggy_adders
    if not (cfg.row_prefetch and seg_cache and S > 1):
        return 0
    # The core hands the claimed row over in the cycle after the start; the walk takes one cycle
    # per segment base (S - 1 per chunk) and is seen as done in the cycle after its last.
    return 2 + C * (S - 1)


def _timing(words, weights, cfg, seg_cache, L, schedule, warm_from, tile_rows=None):
    """(occupancy (M, N), row_end (M,), stalls) for the whole layer: rows from ``warm_from`` on
    start warm. With ``tile_rows``, for every tile of ``tile_rows`` rows at once, each as a layer of
    its own (its rows ``warm_from`` on warm, its lane groups from its first row)."""
    M = words.shape[0]
    N = weights.shape[1]
    tr = tile_rows or M
    warm = np.arange(M) % tr >= warm_from
    unit = tr if tile_rows else cfg.pes
    occ = np.zeros((M, N), dtype=np.int64)
    row_end = np.zeros(M, dtype=np.int64)
    stalls = {"fifo_full": 0, "result_slots": 0, "row_drain": 0}
    for m0, J, phi, walk, tail, early in _fiber_static(words, weights, cfg, seg_cache, L, warm, unit):
        Mb = len(J)
        # lane groups of P rows from each tile's first row (blocks hold whole tiles)
        starts = (np.arange(0, Mb, tr)[:, None] + np.arange(0, tr, cfg.pes)[None, :]).ravel()
        starts = starts[starts < Mb]
        o, e, st = _rows_timing(J, phi, walk, tail, early, cfg, schedule == "lockstep", seg_cache, starts)
        occ[m0 : m0 + len(e)] = o
        row_end[m0 : m0 + len(e)] = e
        for k, v in st.items():
            stalls[k] += v
    return occ, row_end, stalls


def tppe_cycles(words, weights, cfg: CoreParams | LoASConfig, *, seg_cache: bool | None = None,
                lookahead: int | None = None) -> np.ndarray:
    """Cycles each job holds a TPPE when each row runs alone on one TPPE: int64 (M, N).

    A job holds the TPPE from its accept cycle to its F side's last cycle (the next job is accepted
    in the cycle after); the last job of a row also holds it until the row's last result is taken.
    A row's entries sum to the cycles the row takes. Every row starts cold (nothing prefetched: the
    TPPE alone, without the core's ``pf`` hand-over); ``CoreTiming.tppe`` holds the core's figures.

    Parameters
    ----------
    words : uint16 (M, K)   packed spike words (only non-zero-ness matters for timing)
    weights : int8 (K, N)   weights (only non-zero-ness matters)
    cfg : CoreParams        chunk_bits, laggy_adders, fifo_depth, result_slots, seg_cache and
                            lookahead are used (a LoASConfig: its core, CoreParams.from_config)
    seg_cache : bool        None = ``cfg.seg_cache``; the TPPE keeps the segment bases its walk computed for the resident A
                            row (hw TPPE ``seg_cache``); jobs run in mntk order (row m's columns
                            0..N-1 one after the other, n = 0 starting the row)
    lookahead : int         chunk pairs the F side examines per cycle (hw TPPE ``lookahead``); None =
                            ``cfg.lookahead``; 1 = one cycle per empty chunk pair

    Raises
    ------
    ValueError on mismatched shapes or an invalid parameter (CoreParams' checks); TypeError when cfg
    is neither a CoreParams nor a LoASConfig.
    """
    words, weights, p = _check(words, weights, cfg, seg_cache=seg_cache, lookahead=lookahead)
    return _timing(words, weights, p, p.seg_cache, p.lookahead, "dynamic", words.shape[0])[0]


def _dynamic(dur: np.ndarray, P: int, prefetch: int) -> tuple[int, np.ndarray, int]:
    """List schedule of whole rows on P lanes (schedule ``dynamic``): (total cycles, busy (P,),
    cycles lanes waited for their walk unit).

    A lane claims its next row (the next nobody has claimed) when it starts one; lanes starting in
    the same cycle claim in lane order (the heap orders (start, lane)); at cycle 0 lane i starts row
    i and claims row P + i. It starts the claimed row when its current row's last result is taken
    and ``prefetch`` cycles after the current row's start (the walk unit, 0 without one). One heap
    step per row, not per match or cycle."""
    import heapq

    M = len(dur)
    heap = [(0, i) for i in range(min(P, M))]
    row = list(range(min(P, M)))
    busy = np.zeros(P, dtype=np.int64)
    total = wait = 0
    nxt = P
    dur = dur.tolist()
    while heap:
        s, i = heapq.heappop(heap)
        end = s + dur[row[i]]
        busy[i] += dur[row[i]]
        total = max(total, end)
        if nxt < M:
            row[i] = nxt
            nxt += 1
            start = max(end, s + prefetch)
            wait += start - end
            heapq.heappush(heap, (start, i))
    return int(total), busy, int(wait)


def core_cycles(words, weights, cfg: CoreParams | LoASConfig, *, seg_cache: bool | None = None,
                lookahead: int | None = None, schedule: str | None = None) -> CoreTiming:
    """Cycles of the core (P = cfg.pes TPPEs, loop order mntk) for one whole layer.

    ``lockstep``: rows are taken in groups of P (row g*P + i on TPPE i); for each group every
    column n is one step costing the max over the group's TPPEs; rows past M leave their TPPE idle.
    ``dynamic``: whole rows are list-scheduled on the P TPPEs (module docstring). With
    ``cfg.row_prefetch`` rows P.. start with their segment bases cached (module docstring).

    ``seg_cache`` and ``lookahead`` as :func:`tppe_cycles`; ``schedule`` None = ``cfg.schedule``
    (hw Core parameters of the same names).

    Raises
    ------
    ValueError / TypeError as :func:`tppe_cycles`.
    """
    words, weights, cfg = _check(words, weights, cfg, True, seg_cache=seg_cache, lookahead=lookahead,
                                 schedule=schedule)
    seg_cache, schedule = cfg.seg_cache, cfg.schedule
    M, N = words.shape[0], weights.shape[1]
    P = cfg.pes
    C = max(1, -(-words.shape[1] // cfg.chunk_bits))
    pre = _prefetch_cycles(cfg, seg_cache, C)
    # Rows 0..P-1 start cold (nothing prefetched yet); every later row was claimed and walked ahead.
    occ, row_end, stalls = _timing(words, weights, cfg, seg_cache, cfg.lookahead, schedule, P if pre else M)
    total, busy, wait, steps = _lanes(occ, row_end, cfg, pre)
    return CoreTiming(total=int(total), busy=busy.astype(np.int64),
                      stalls={**stalls, "walk_wait": wait, "imbalance": int(total * P - busy.sum() - wait)},
                      tppe=occ, steps=int(steps))


def tile_cycles(words, weights, cfg: CoreParams | LoASConfig, tile_rows: int, tile_cols: int):
    """Core cycles of every tile of a tiled layer (the accelerator's runs, hw/README.md
    "Accelerator"): tile (g, j) = rows g*tile_rows.. and columns j*tile_cols.., each exactly
    ``core_cycles(words[rows], weights[:, cols], cfg).total``, computed for all the row groups of a
    B tile at once (the per-row timing is vectorized over rows; a tile's lane groups and prefetch
    start from its first row).

    Returns (total int64 (G, J), busy int64 (P,) and stalls dict summed over the tiles, as
    :class:`CoreTiming`'s).
    """
    words, weights, cfg = _check(words, weights, cfg, True)
    M, N = words.shape[0], weights.shape[1]
    P = cfg.pes
    C = max(1, -(-words.shape[1] // cfg.chunk_bits))
    pre = _prefetch_cycles(cfg, cfg.seg_cache, C)
    G, J = -(-M // tile_rows), -(-N // tile_cols)
    totals = np.zeros((G, J), dtype=np.int64)
    busy = np.zeros(P, dtype=np.int64)
    stalls = {"fifo_full": 0, "result_slots": 0, "row_drain": 0, "walk_wait": 0, "imbalance": 0}
    for j in range(J):
        occ, row_end, st = _timing(words, weights[:, j * tile_cols:(j + 1) * tile_cols], cfg, cfg.seg_cache,
                                   cfg.lookahead, cfg.schedule, P if pre else tile_rows, tile_rows)
        for k, v in st.items():
            stalls[k] += v
        for g in range(G):
            rows = slice(g * tile_rows, (g + 1) * tile_rows)
            total, b, wait, _ = _lanes(occ[rows], row_end[rows], cfg, pre)
            totals[g, j] = total
            busy += b
            stalls["walk_wait"] += wait
            stalls["imbalance"] += int(total * P - b.sum() - wait)
    return totals, busy, stalls


def _lanes(occ, row_end, cfg, pre):
    """The P lanes' schedule of rows with these occupancies and ends (cfg.schedule): (total, busy
    (P,), cycles waiting for the walk unit, steps)."""
    M, N = occ.shape
    P = cfg.pes
    if cfg.schedule == "dynamic":
        total, busy, wait = _dynamic(row_end, P, pre)
        steps = M * N
    else:
        G = -(-M // P)
        padded = np.zeros(G * P, dtype=np.int64)
        padded[:M] = row_end
        ends = padded.reshape(G, P)
        # A group starts when every lane that has a row in it has taken its last result (a lane
        # without one, in the last group, may still be finishing) and the walk units have filled
        # the group's banks (started with the previous group): one step per group.
        last = M - (G - 1) * P
        step = ends[:-1].max(axis=1)
        lanes = np.full(G - 1, P)  # lanes that start a row in the next group
        if G > 1:
            step[-1] = ends[-2, :last].max()
            lanes[-1] = last
        walk_wait = np.maximum(0, pre - step)
        wait = int((walk_wait * lanes).sum())
        start = np.concatenate(([0], np.cumsum(step + walk_wait)))
        total = int((start[:, None] + ends).max())
        busy_rows = np.zeros(G * P, dtype=np.int64)
        busy_rows[:M] = occ.sum(axis=1)
        busy = busy_rows.reshape(G, P).sum(axis=0)
        steps = G * N
    return int(total), busy.astype(np.int64), int(wait), int(steps)
