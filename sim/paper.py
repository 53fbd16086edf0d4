"""``fidelity: paper``: the cost models of the LoAS authors' simulator, reimplemented exactly.

The LoAS paper's figures come from its authors' own scripts (``github:RuokaiYin/LoAS`` @16eae04,
``src/snn-*-result.py``). ../shared/spec/artifact.md specifies them; this module follows that page
section by section, its quirks included, so that a user can put the paper's method beside our
cycle-level models (``fidelity: cycle``) on the same spikes and weights:

* cycles (artifact.md section 2.4, closed form): per tile, the max over the 16 PEs of their matches
  (non-zero x meets non-zero w), summed over tiles. No scan, join, merge, memory or per-tile cost;
  an empty tile costs 0 cycles. LoAS counts matches on the *packed* matrix (one per non-silent
  word), so its cycles do not depend on T.
* buffers (section 3): one W and one X buffer per design, capacity counted in non-zero elements,
  FIFO eviction, hits by tile *content* (any buffered tile of equal shape and values hits), hit and
  miss bookkeeping in the script's mixed units. Simulated tile by tile in the script's loop order;
  tile contents are hashed once per tile position, so the loop handles integer ids only.
* traffic (section 4): element counts per key, converted to KB with the bit width named by the
  key's last character; the previous layer's write-back is charged on this layer's im2col input.
* energy (section 6.2): ``cycles * c_time * leakage + dram_e * DRAM bytes + sram_e * SRAM bytes +
  op energy * comps``, constants in sim/configs/energy_paper.yaml. Its units do not agree (section
  6.3): the figure is only meaningful as a ratio between designs, as the paper uses it.

Inputs are the GEMM operands X (T, M, K) of binary spikes and W (K, N) (any numeric dtype; only
non-zero-ness enters the costs, values enter the buffer hits). LoAS designs pack X into spike
counts (section 1.2; ``strong`` also silences words with exactly one spike).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from sim.config import load

PES = 16  # the scripts' PE count (hard-coded there)


@dataclass(frozen=True)
class PaperSpec:
    """One design of the authors' simulator (artifact.md section 4.6).

    Parameters
    ----------
    name : str           the script's design ('loas-mntk', 'loas-nmtk', 'sparten', 'gospa', 'gamma')
    packed : bool        x is the packed count matrix (1, M, K) (LoAS) or the spikes (T, M, K)
    tm, tk, tn : int     x tile (1, tm, tk), w tile (tk, tn)
    order : str          loop order, outermost first
    spread : str         'm' (a PE per x row) or 'n' (a PE per w column)
    w_cap, x_cap : int   buffer capacities in non-zero elements
    bits : dict          bit width by the last character of a traffic key
    """

    name: str
    packed: bool
    tm: int
    tk: int
    tn: int
    order: str
    spread: str
    w_cap: int
    x_cap: int
    bits: dict


SPECS = {
    "loas-mntk": PaperSpec("loas-mntk", True, 16, 128, 32, "mntk", "m", 128 * 32, 128 * 1024,
                           {"x": 4, "w": 8, "b": 1, "o": 4}),
    "loas-nmtk": PaperSpec("loas-nmtk", True, 32, 128, 16, "nmtk", "n", 128 * 1024, 128 * 32,
                           {"x": 4, "w": 8, "b": 1, "o": 4}),
    "sparten": PaperSpec("sparten", False, 32, 128, 16, "nmtk", "n", 128 * 1024, 128 * 32 * 4,
                         {"x": 1, "w": 8, "b": 1, "o": 1}),
    "gospa": PaperSpec("gospa", False, 64, 256, 16, "kntm", "n", 256 * 4 * 16, 2720 * 64,
                       {"x": 1, "w": 8, "p": 1, "r": 8, "o": 8}),
    "gamma": PaperSpec("gamma", False, 16, 64, 64, "mktn", "m", 256 * 512, 32 * 256,
                       {"x": 1, "w": 8, "a": 6, "b": 6, "o": 8}),
}
#: Gamma's DRAM psum scale (timestep - 3) / timestep with timestep hard-coded to 4 (section 4.5)
GAMMA_DRAM_O_SCALE = (4 - 3) / 4


@dataclass(frozen=True)
class PaperLayer:
    """One layer through one design of the authors' simulator.

    Attributes
    ----------
    design, layer : str
    M, K, N, T : int
    cycles : int          ``tot_cycs``
    comps : int           ``tot_comps`` (effectual operations)
    traffic_kb : dict     every ``sram_traffic_*`` / ``dram_traffic_*`` key, in KB
    total_dram_kb, total_sram_kb : float
    hit_w, miss_w, hit_x, miss_x : int   the script's buffer bookkeeping (mixed units, section 3)
    energy : float        section 6.2's E (mixed units: compare designs by ratio only)
    """

    design: str
    layer: str
    M: int
    K: int
    N: int
    T: int
    cycles: int
    comps: int
    traffic_kb: dict
    total_dram_kb: float
    total_sram_kb: float
    hit_w: int
    miss_w: int
    hit_x: int
    miss_x: int
    energy: float = 0.0
    energy_parts: dict = field(default_factory=dict)

    @property
    def imbalance(self) -> float:
        """Cycles above the work bound comps / 16: the per-tile barrier over PEs, the only cost the
        script charges beyond the matches."""
        return self.cycles - self.comps / PES

    def to_dict(self) -> dict:
        d = asdict(self)
        d["imbalance"] = self.imbalance
        return d


# Energy ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PaperDesignEnergy:
    """Per-design constants of ``plot_snn_energy`` (artifact.md section 6.2).

    Parameters
    ----------
    comp_pj : float      per-op PE energy (pJ, from the synthesis model)
    comp_scale : float   factor on it (GoSPA's 1.3 "IDGEN overhead", Gamma's 6/8)
    pe_mw, sram_mw : float  the two terms of the script's leakage ``lp`` ("left: comp, right: sram")
    """

    comp_pj: float = 5.8
    comp_scale: float = 1.0
    pe_mw: float = 0.5
    sram_mw: float = 124.48

    def check(self):
        for k in ("comp_pj", "comp_scale", "pe_mw", "sram_mw"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}: must be >= 0, got {getattr(self, k)}")

    @property
    def comp(self) -> float:
        return self.comp_pj * self.comp_scale

    @property
    def lp(self) -> float:
        return self.pe_mw + self.sram_mw


@dataclass(frozen=True)
class PaperDesignEnergies:
    loas: PaperDesignEnergy = field(default_factory=PaperDesignEnergy)
    sparten: PaperDesignEnergy = field(default_factory=lambda: PaperDesignEnergy(6.15))
    gospa: PaperDesignEnergy = field(default_factory=lambda: PaperDesignEnergy(1.34, 1.3, 31.0, 148.0))
    gamma: PaperDesignEnergy = field(default_factory=lambda: PaperDesignEnergy(4.98, 0.75, 0.32, 148.0))


@dataclass(frozen=True)
class PaperEnergy:
    """The constants of the paper's energy formula (sim/configs/energy_paper.yaml).

    Parameters
    ----------
    clock_mhz : float     c_time = 1 / clock_mhz (800: one cycle in us)
    dram_e, sram_e : float  per byte (the script multiplies KB by 1024)
    designs : PaperDesignEnergies
    """

    clock_mhz: float = 800.0
    dram_e: float = 2.9
    sram_e: float = 0.0681
    designs: PaperDesignEnergies = field(default_factory=PaperDesignEnergies)

    def check(self):
        if self.clock_mhz <= 0:
            raise ValueError(f"clock_mhz: must be > 0, got {self.clock_mhz}")
        for k in ("dram_e", "sram_e"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k}: must be >= 0, got {getattr(self, k)}")

    def design(self, name: str) -> PaperDesignEnergy:
        return getattr(self.designs, "loas" if name.startswith("loas") else name)


@lru_cache(maxsize=8)
def load_paper_energy(path: str = "energy_paper") -> PaperEnergy:
    """Load the paper's energy constants (a bare name means sim/configs/NAME.yaml)."""
    return load(path, PaperEnergy)


def energy(design: str, cycles: int, comps: int, dram_kb: float, sram_kb: float,
           econf: PaperEnergy | None = None) -> dict:
    """The terms of section 6.2's E for one design (sum them for E)."""
    econf = econf or load_paper_energy()
    d = econf.design(design)
    return {"leakage": cycles * (1.0 / econf.clock_mhz) * d.lp, "dram": econf.dram_e * dram_kb * 1024,
            "sram": econf.sram_e * sram_kb * 1024, "compute": d.comp * comps}


# Tiles -------------------------------------------------------------------------------------------
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class _Tiles:
    """Every tile position of one operand: content id, nnz, numel, rows, cols (and for w tiles the
    number of columns with a non-zero)."""

    cid: np.ndarray
    nnz: np.ndarray
    numel: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    nzcol: np.ndarray


def _tile_table(A: np.ndarray, tr: int, tc: int) -> _Tiles:
    """A (B, R, C) -> tiles (B, ceil(R/tr), ceil(C/tc)) flattened in that order. Edge tiles are
    truncated (section 2.1): the zero padding used here to vectorize is keyed with the tile's true
    shape, so content ids equal the script's ``torch.equal`` (shape and values; -0.0 == 0.0)."""
    B, R, C = A.shape
    RT, CT = _cdiv(R, tr), _cdiv(C, tc)
    pad = np.zeros((B, RT * tr, CT * tc), np.float32)
    pad[:, :R, :C] = A
    pad += np.float32(0.0)  # -0.0 -> 0.0, as torch.equal compares
    tiles = pad.reshape(B, RT, tr, CT, tc).transpose(0, 1, 3, 2, 4).reshape(B * RT * CT, tr, tc)
    rows = np.minimum(tr, R - np.arange(RT) * tr)
    cols = np.minimum(tc, C - np.arange(CT) * tc)
    rows = np.broadcast_to(rows[None, :, None], (B, RT, CT)).ravel()
    cols = np.broadcast_to(cols[None, None, :], (B, RT, CT)).ravel()
    flat = tiles.reshape(len(tiles), -1)
    key = np.concatenate([np.stack([rows, cols], 1).astype(np.float32), flat], axis=1)
    # Content hashing: a dict keyed by each tile's bytes (hash, then a full comparison on a hash
    # match: exact), one entry per tile position, not per tile pair.
    ids: dict[bytes, int] = {}
    cid = np.fromiter((ids.setdefault(k.tobytes(), len(ids)) for k in np.ascontiguousarray(key)), np.int64,
                      count=len(key))
    nz = tiles != 0
    return _Tiles(cid=cid, nnz=nz.sum(axis=(1, 2)).astype(np.int64), numel=(rows * cols).astype(np.int64),
                  rows=rows.astype(np.int64), cols=cols.astype(np.int64), nzcol=nz.any(axis=1).sum(axis=1).astype(np.int64))


def fifo_buffer(cids: np.ndarray, nnz: np.ndarray, capacity: int) -> tuple[np.ndarray, int, int]:
    """Section 3's buffer over a sequence of tile accesses: (missed (bool per access), hit, miss).

    Content-addressed (a buffered tile of the same content id hits), FIFO eviction without recency,
    capacity in non-zero elements; a miss counts 1 and adds n - 1 to the hits, a hit adds n.

    Raises
    ------
    ValueError
        If one tile holds more non-zeros than the capacity (the script fails there too).
    """
    q: deque = deque()
    held: set = set()
    left, hit, miss = int(capacity), 0, 0
    missed = np.zeros(len(cids), bool)
    for i, (c, n) in enumerate(zip(cids.tolist(), nnz.tolist())):  # integer ids only, per tile
        if c in held:
            hit += n
            continue
        while n > left:
            if not q:
                raise ValueError(f"a tile with {n} non-zeros does not fit a buffer of {capacity}")
            old, on = q.popleft()
            held.discard(old)
            left += on
        q.append((c, n))
        held.add(c)
        left -= n
        miss += 1
        hit += n - 1
        missed[i] = True
    return missed, hit, miss


def tile_cycles(Xm: np.ndarray, Wm: np.ndarray, tm: int, tk: int, tn: int, spread: str) -> tuple[int, int]:
    """(cycles, comps) by section 2.4's closed form for 0/1 float32 masks Xm (T', M, K), Wm (K, N)."""
    Tp, M, K = Xm.shape
    N = Wm.shape[1]
    MT, NT = _cdiv(M, tm), _cdiv(N, tn)
    cycles = comps = 0
    P = np.zeros((Tp, MT * tm, NT * tn), np.float32)
    for k0 in range(0, K, tk):  # one matrix product per k-tile
        P[:, :M, :N] = (Xm[:, :, k0:k0 + tk].reshape(Tp * M, -1) @ Wm[k0:k0 + tk]).reshape(Tp, M, N)
        Q = P.reshape(Tp, MT, tm, NT, tn)
        if spread == "m":
            per_pe = Q.sum(axis=4, dtype=np.int64).max(axis=2)
        else:
            per_pe = Q.sum(axis=2, dtype=np.int64).max(axis=3)
        cycles += int(per_pe.sum())
        comps += int(P.sum(dtype=np.float64))
    return cycles, comps


def pack(X: np.ndarray, strong: bool = False) -> np.ndarray:
    """Section 1.2: (T, M, K) spikes -> (1, M, K) spike counts; ``strong`` zeroes counts of 1."""
    Xp = np.asarray(X, np.float32).sum(axis=0, dtype=np.float32)
    if strong:
        Xp = Xp * (Xp != 1.0)
    return Xp[None]


def simulate_paper(design: str, X: np.ndarray, W: np.ndarray, *, strong: bool = False, name: str = "layer",
                   econf: PaperEnergy | None = None) -> PaperLayer:
    """One layer through the authors' model of ``design`` (a key of :data:`SPECS`).

    Parameters
    ----------
    X : (T, M, K) binary spikes (0/1, any dtype); LoAS designs pack them (``strong`` as :func:`pack`)
    W : (K, N) weights (zero = pruned)

    Raises
    ------
    ValueError
        On an unknown design or operands of the wrong shape.
    """
    if design not in SPECS:
        raise ValueError(f"unknown paper-method design {design!r}; known: {', '.join(SPECS)}")
    s = SPECS[design]
    X = np.asarray(X)
    W = np.asarray(W)
    if X.ndim != 3 or W.ndim != 2 or X.shape[2] != W.shape[0]:
        raise ValueError(f"operands: X must be (T, M, K) and W (K, N), got {X.shape} and {W.shape}")
    T, M, K = X.shape
    N = W.shape[1]
    Xv = pack(X, strong) if s.packed else np.asarray(X, np.float32)
    Wv = np.asarray(W, np.float32)
    Tp = Xv.shape[0]
    cycles, comps = tile_cycles((Xv != 0).astype(np.float32), (Wv != 0).astype(np.float32), s.tm, s.tk, s.tn,
                                s.spread)
    xt = _tile_table(Xv, s.tm, s.tk)  # positions (t, m, k)
    wt = _tile_table(Wv[None], s.tk, s.tn)  # positions (k, n)
    MT, NT, KT = _cdiv(M, s.tm), _cdiv(N, s.tn), _cdiv(K, s.tk)
    steps = {"t": Tp, "m": MT, "n": NT, "k": KT}
    grid = np.indices([steps[c] for c in s.order]).reshape(4, -1)
    ix = {c: grid[i] for i, c in enumerate(s.order)}
    xpos = (ix["t"] * MT + ix["m"]) * KT + ix["k"]
    wpos = ix["k"] * NT + ix["n"]
    w_miss, hit_w, miss_w = fifo_buffer(wt.cid[wpos], wt.nnz[wpos], s.w_cap)  # W first, then X
    x_miss, hit_x, miss_x = fifo_buffer(xt.cid[xpos], xt.nnz[xpos], s.x_cap)
    nw, ew, nx, ex = wt.nnz[wpos], wt.numel[wpos], xt.nnz[xpos], xt.numel[xpos]
    rows = xt.rows[xpos]
    c: dict[str, int] = {}

    def add(key, v):
        c[key] = c.get(key, 0) + int(v)

    nnz_all, numel_all = int(np.count_nonzero(Xv)), int(Xv.size)
    if s.packed:  # LoAS (4.1, 4.2)
        add("dram_traffic_o", nnz_all)
        add("dram_traffic_xb", numel_all)
        for lvl in ("dram", "sram"):
            add(f"{lvl}_traffic_wb", ew[w_miss].sum())
            add(f"{lvl}_traffic_w", nw[w_miss].sum())
            add(f"{lvl}_traffic_xb", ex[x_miss].sum())
            add(f"{lvl}_traffic_x", nx[x_miss].sum())
        if s.order == "mntk":
            cx = xt.cid[xpos]
            add("sram_traffic_xb", ex[cx != np.roll(cx, 1)].sum())  # i = 0 compares with the last tile
            add("sram_traffic_w", nw.sum())
            add("sram_traffic_wb", ew.sum())
            add("sram_traffic_x", comps)  # one 4-bit x read per match
        else:
            cw = wt.cid[wpos]
            add("sram_traffic_wb", ew[cw != np.roll(cw, 1)].sum())
            add("sram_traffic_x", nx.sum())
            add("sram_traffic_xb", ex.sum())
            add("sram_traffic_w", comps)
    elif design == "sparten":  # 4.3
        add("dram_traffic_o", numel_all)
        for lvl in ("dram", "sram"):
            add(f"{lvl}_traffic_wb", ew[w_miss].sum())
            add(f"{lvl}_traffic_w", nw[w_miss].sum())
            add(f"{lvl}_traffic_x", ex[x_miss].sum())
        cw = wt.cid[wpos]
        add("sram_traffic_wb", ew[cw != np.roll(cw, 1)].sum())
        add("sram_traffic_x", ex.sum())
        add("sram_traffic_w", comps)
    elif design == "gospa":  # 4.4
        add("dram_traffic_csr", nnz_all)
        for lvl in ("dram", "sram"):
            add(f"{lvl}_traffic_w", nw[w_miss].sum())
            add(f"{lvl}_traffic_wsp", ew[w_miss].sum())
            add(f"{lvl}_traffic_x", nx[x_miss].sum())
            add(f"{lvl}_traffic_csr", nx[x_miss].sum())
        add("sram_traffic_csr", nx.sum())
        add("sram_traffic_x", nx.sum())
        add("sram_traffic_w", nw.sum())
        add("sram_traffic_wsp", ew.sum())
        add("dram_traffic_o", (2 * wt.cols[wpos] * rows).sum())  # dense 8-bit psums, per active PE
    else:  # gamma, 4.5
        add("dram_traffic_x_a", nnz_all)
        for lvl in ("dram", "sram"):
            add(f"{lvl}_traffic_w", nw[w_miss].sum())
            add(f"{lvl}_traffic_w_b", nw[w_miss].sum())
            add(f"{lvl}_traffic_x", nx[x_miss].sum())
            add(f"{lvl}_traffic_x_a", nx[x_miss].sum())
        add("sram_traffic_w", (rows * nw).sum())  # every PE reads the whole w tile
        add("sram_traffic_w_b", (rows * nw).sum())
        add("sram_traffic_x", nx.sum())
        add("sram_traffic_x_a", nx.sum())
        psum = (2 * rows * wt.nzcol[wpos]).sum()
        add("dram_traffic_o", psum)
        add("sram_traffic_o", psum)
    kb = {k: v * s.bits[k[-1]] / (1024 * 8) for k, v in c.items()}
    if design == "gamma":
        kb["dram_traffic_o"] *= GAMMA_DRAM_O_SCALE
    dram = sum(v for k, v in kb.items() if k.startswith("dram"))
    sram = sum(v for k, v in kb.items() if k.startswith("sram"))
    parts = energy(design, cycles, comps, dram, sram, econf)
    return PaperLayer(design=design, layer=name, M=M, K=K, N=N, T=T, cycles=cycles, comps=comps, traffic_kb=kb,
                      total_dram_kb=dram, total_sram_kb=sram, hit_w=hit_w, miss_w=miss_w, hit_x=hit_x, miss_x=miss_x,
                      energy=float(sum(parts.values())), energy_parts=parts)


def unpack_words(words: np.ndarray, T: int) -> np.ndarray:
    """Packed spike words (M, K) -> (T, M, K) float32 spikes (bit t = timestep t)."""
    w = np.asarray(words, np.uint16)
    return ((w[None] >> np.arange(T, dtype=np.uint16)[:, None, None]) & 1).astype(np.float32)


def spec_name(design: str, loop_order: str = "mntk") -> str:
    """Registry design name -> :data:`SPECS` key (LoAS by its loop order)."""
    return f"loas-{loop_order}" if design == "loas" else design


def simulate_words(design: str, words, weights, T: int, *, loop_order: str = "mntk", name: str = "layer",
                   econf: PaperEnergy | None = None) -> PaperLayer:
    """:func:`simulate_paper` on a trace layer's operands (packed words (M, K), int8 weights (K, N))."""
    return simulate_paper(spec_name(design, loop_order), unpack_words(words, T), weights, name=name,
                          econf=econf)


def paper_totals(layers: list[PaperLayer]) -> dict:
    """Whole network as the plotting scripts sum it: every layer in the result dict."""
    return {"cycles": int(sum(p.cycles for p in layers)), "comps": int(sum(p.comps for p in layers)),
            "total_dram_kb": float(sum(p.total_dram_kb for p in layers)),
            "total_sram_kb": float(sum(p.total_sram_kb for p in layers)),
            "energy": float(sum(p.energy for p in layers)),
            "imbalance": float(sum(p.imbalance for p in layers))}
