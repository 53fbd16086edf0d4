"""Cycle-exact model of the global buffer (hw/buffer.py ``GlobalBuffer``, hw/README.md "Global
buffer"): given each requester's request stream, the cycle every request is granted, and the
buffer's counters.

Timing rules (cycle 0 = the first cycle after reset; the RTL is held to them in
tests/test_hw_buffer.py):

* A requester's request k is valid from ``max(earliest[k], grant[k-1] + 1)`` (a stream source that
  presents its next beat in the cycle after a transfer, not before ``earliest``) and stays valid
  until granted. The write port's stream follows the same rule.
* Per bank and cycle, among the valid requests mapped to the bank (``BufferParams.bank_of``), with
  the R readers as contenders 0..R-1 and the write port as contender R: the first contender at or
  after the bank's pointer (cyclically) wins; the pointer becomes winner + 1 (mod R + 1). A reading
  winner also grants every valid read of the same line (merged: one bank read).
* A read granted in cycle g is answered in g + 1 with the line as it was in cycle g (writes granted
  before g); a write granted in g changes the line from g + 1 on.
* Counters: ``bank_reads`` (winning reads), ``merged_reads`` (the other granted reads), ``writes``,
  ``read_stalls[r]`` / ``write_stalls`` (cycles a request was valid and not granted).

The loop runs once per cycle in which some request is valid, the arbitration in numpy over the
R + 1 stream heads (the same-line merge a loop over them); every such cycle grants at least one
request, so it runs at most once per request, and idle stretches are skipped in one step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.params import BufferParams


@dataclass(frozen=True)
class BufferTiming:
    """What :func:`buffer_timing` computes.

    read_grant : list of int64 arrays, per requester the grant cycle of each read (its response
                 comes one cycle later)
    read_valid : list of int64 arrays, the cycle each read became valid
    write_grant, write_valid : int64 arrays, the same for the write port
    bank_reads, merged_reads, writes, write_stalls : int
    read_stalls : int64 array (R,)
    """

    read_grant: list
    read_valid: list
    write_grant: np.ndarray
    write_valid: np.ndarray
    bank_reads: int
    merged_reads: int
    writes: int
    read_stalls: np.ndarray
    write_stalls: int

    def counters(self) -> dict:
        """The counters by the RTL's port names."""
        return {"bank_reads": self.bank_reads, "merged_reads": self.merged_reads, "writes": self.writes,
                "read_stalls": [int(x) for x in self.read_stalls], "write_stalls": self.write_stalls}

    @property
    def cycles(self) -> int:
        """Cycles until the last response (or the last write's effect): 0 without requests."""
        ends = [g.max() + 1 for g in (*self.read_grant, self.write_grant) if len(g)]
        return int(max(ends, default=0))


def _stream(s) -> tuple[np.ndarray, np.ndarray]:
    earliest, addr = (np.asarray(x, dtype=np.int64).reshape(-1) for x in s)
    if earliest.shape != addr.shape:
        raise ValueError(f"a request stream has {earliest.size} earliest cycles but {addr.size} addresses")
    return earliest, addr


def buffer_timing(bp: BufferParams, reads, writes=((), ())) -> BufferTiming:
    """Grant cycles and counters of ``GlobalBuffer(bp)`` for request streams ``reads`` (R pairs
    ``(earliest, addr)`` of equal-length sequences, one per requester) and ``writes`` (one such
    pair for the write port; the data does not change the timing). Addresses are line addresses.

    Raises ValueError when there are not ``bp.requesters`` read streams or an address is outside
    the buffer."""
    R, N = bp.requesters, bp.requesters + 1
    if len(reads) != R:
        raise ValueError(f"reads: {len(reads)} request streams for {R} requesters")
    streams = [_stream(s) for s in reads] + [_stream(writes)]
    for e, a in streams:
        if a.size and (a.min() < 0 or a.max() >= bp.lines):
            raise ValueError(f"address {int(a.max() if a.max() >= bp.lines else a.min())} outside the buffer's "
                             f"{bp.lines} lines")
    lengths = np.array([len(a) for _, a in streams])
    grants = [np.zeros(n, dtype=np.int64) for n in lengths]
    valids = [np.zeros(n, dtype=np.int64) for n in lengths]
    INF = np.iinfo(np.int64).max
    k = np.zeros(N, dtype=np.int64)  # next request of each contender
    head_v = np.array([e[0] if len(e) else INF for e, _ in streams], dtype=np.int64)
    head_a = np.array([a[0] if len(a) else 0 for _, a in streams], dtype=np.int64)
    ptr = np.zeros(bp.banks, dtype=np.int64)
    is_read = np.arange(N) < R
    bank_reads = merged = 0
    now = 0  # the first cycle not yet arbitrated
    while True:
        t = head_v.min()
        if t == INF:
            break
        t = max(int(t), now)  # a request not granted in cycle t - 1 contends again in t
        now = t + 1
        act = np.flatnonzero(head_v <= t)
        bank = bp.bank_of(head_a[act])
        # round-robin: distance from the bank's pointer; the smallest per bank wins
        order = np.lexsort(((act - ptr[bank]) % N, bank))
        b_sorted = bank[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = b_sorted[1:] != b_sorted[:-1]
        win = act[order[first]]
        win_bank = b_sorted[first]
        ptr[win_bank] = (win + 1) % N
        read_win = is_read[win]
        bank_reads += int(read_win.sum())
        # merged reads: active reads of a reading winner's line
        line_of_win = dict(zip(head_a[win[read_win]].tolist(), win[read_win].tolist()))
        granted = set(win.tolist())
        for i in act[is_read[act]].tolist():
            if i not in granted and int(head_a[i]) in line_of_win:
                granted.add(i)
                merged += 1
        for i in granted:
            j = k[i]
            grants[i][j] = t
            valids[i][j] = head_v[i]
            k[i] = j + 1
            e, a = streams[i]
            if j + 1 < len(e):
                head_v[i] = max(e[j + 1], t + 1)
                head_a[i] = a[j + 1]
            else:
                head_v[i] = INF
    stalls = np.array([int((g - v).sum()) for g, v in zip(grants, valids)], dtype=np.int64)
    return BufferTiming(read_grant=grants[:R], read_valid=valids[:R], write_grant=grants[R], write_valid=valids[R],
                        bank_reads=bank_reads, merged_reads=merged, writes=int(lengths[R]), read_stalls=stalls[:R],
                        write_stalls=int(stalls[R]))
