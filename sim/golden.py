"""The golden model: LoAS layer arithmetic, bit for bit (spec/loas.md sections 4, 5, 7).

This module is the arithmetic contract of the project. The RTL (hw/), the cycle-level model and the
torch integer inference mode (models/) are all checked against it exactly.

For one layer with packed input spike words A (M x K, bit t = timestep t), int8 weights B (K x N),
integer bias b (N) and integer LIF parameters:

* ``O[t, m, n] = b[n] + sum_k bit_t(A[m, k]) * B[k, n]``   (bias added once per timestep)
* The TPPE computes the same value by speculation:
  ``pseudo[m, n] = b[n] + sum_{k: A[m,k] != 0} B[k, n]`` (every match assumed to fire at every t),
  ``correction[t, m, n] = sum_{k: A[m,k] != 0, bit_t(A[m,k]) == 0} B[k, n]``,
  ``O[t] = pseudo - correction[t]`` exactly.
* An optional integer *residual* current R (broadcastable to (T, M, N); a ResNet block's shortcut,
  in the layer's own integer units) enters the P-LIF with the GEMM result:
  ``O[t] = pseudo - correction[t] + R[t]``. Absent means zero.
* P-LIF over t with ``U = 0`` before t = 0: ``X = O[t] + U``; fire ``C[t] = X >= threshold``;
  ``U = 0`` if fired (hard reset) else ``X >> decay_shift`` (arithmetic shift = floor division).
* Output words pack C over t; "strong" mode (n_mask = 1) zeroes words with exactly one spike
  (n_mask = 2 also those with two; the hardware's output compressor implements n_mask <= 1).

Widths: the inputs have declared widths -- uint16 words with T bits, int8 weights, int32 bias,
int32 residual, an int32 threshold -- checked on every call (:func:`int_range_problem`, which
compares the exact extremes with the bounds, so the check itself cannot overflow). Within them
every value is computed exactly in int64 (no sum can come near 2**63) and then checked against the
declared datapath widths (:class:`Widths`); a value that does not fit raises
:class:`ArithmeticOverflow` naming the quantity, the value and the width. Nothing ever wraps.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, asdict

import numpy as np

from sim.errors import ArithmeticOverflow
from sim.fibers import MAX_T, Fibers

# float64 matrix products are exact while every partial sum stays below 2**53; with |w| <= 128 this
# holds for any K below 2**45, so BLAS gives integer-exact results far faster than int64 matmul.
_EXACT_LIMIT = 2**53
# float32 holds every integer below 2**24: products of 0/1 planes and int8 weights are exact in it
# while K * 128 stays below that (K < 131072, every real layer), at half the memory traffic.
_EXACT_LIMIT_F32 = 2**24


# Declared signed widths of the layer's integer inputs (the trace format stores them in these).
BIAS_BITS = 32
RESIDUAL_BITS = 32
THRESHOLD_BITS = 32


def int_range_problem(values, bits: int) -> str | None:
    """None when every value of the integer array (or scalar) ``values`` fits the signed ``bits``-bit
    range; else the problem as text, naming the offending value as it is, e.g. ``value
    -9223372036854775808 outside the int32 range [-2147483648, 2147483647]``.

    The extremes are taken in the array's own dtype (exact) and compared as Python ints with the
    bounds: nothing is negated or cast first, so no value (INT64_MIN, uint64 2**63) can wrap past the
    check. A non-integer dtype is a problem too. This is the one integer-range check of the project:
    the trace loader, the exporter and the golden model all use it.
    """
    a = np.asarray(values)
    if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
        return f"dtype {a.dtype} is not an integer type"
    if a.size == 0:
        return None
    lo, hi = int(a.min()), int(a.max())
    lo_b, hi_b = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if lo >= lo_b and hi <= hi_b:
        return None
    return f"value {lo if lo < lo_b else hi} outside the int{bits} range [{lo_b}, {hi_b}]"


def _exact_dtype(K: int):
    """The cheaper float dtype in which a 0/1 (M, K) times int8 (K, N) product is exact."""
    return np.float32 if K * 128 < _EXACT_LIMIT_F32 else np.float64


@dataclass(frozen=True)
class LIFParams:
    """Integer LIF neuron of LoAS's P-LIF.

    Parameters
    ----------
    threshold : int
        Firing threshold in accumulator units (fires when membrane >= threshold). Must be >= 1.
    decay_shift : int
        Leak as an arithmetic right shift (2 = multiply by 0.25, spikingjelly tau = 4/3).

    Raises
    ------
    ValueError
        On a threshold below 1 or a negative shift.
    """

    threshold: int
    decay_shift: int = 2

    def __post_init__(self):
        if int(self.threshold) != self.threshold or not 1 <= self.threshold < 1 << (THRESHOLD_BITS - 1):
            raise ValueError(f"LIF threshold must be an integer in 1..{(1 << (THRESHOLD_BITS - 1)) - 1}, "
                             f"got {self.threshold!r}")
        if int(self.decay_shift) != self.decay_shift or not 0 <= self.decay_shift <= 16:
            raise ValueError(f"LIF decay_shift must be an integer in 0..16, got {self.decay_shift!r}")


@dataclass(frozen=True)
class Widths:
    """Declared signed bit widths of the datapath. ``None`` = derive from the layer so that overflow
    is impossible (see :func:`safe_widths`).

    Parameters
    ----------
    acc_bits : int or None
        Pseudo-accumulator, correction accumulators and O[t].
    mem_bits : int or None
        Membrane X = O[t] + U (needs one bit more than O in the worst case: |U| <= |X| / 4).
    """

    acc_bits: int | None = None
    mem_bits: int | None = None


def signed_bits(value_abs_max: int, value_min: int = 0) -> int:
    """Smallest signed two's-complement width that holds [value_min, value_abs_max]."""
    hi = max(int(value_abs_max), 0)
    lo = min(int(value_min), 0)
    return max(hi.bit_length(), (-lo - 1).bit_length() if lo < 0 else 0) + 1


def safe_widths(K: int, weight_bits: int = 8, bias_abs_max: int = 0) -> Widths:
    """Widths for which no layer with this K, weight width and bias bound can overflow."""
    acc_max = bias_abs_max + K * (1 << (weight_bits - 1))
    acc = signed_bits(acc_max, -acc_max)
    return Widths(acc_bits=acc, mem_bits=acc + 1)


@dataclass(frozen=True)
class LayerStats:
    """Counts of one layer run by the golden model (JSON-ready via :meth:`to_dict`)."""

    T: int
    M: int
    K: int
    N: int
    effectual_ops: int  # sum over (m, n) of |nz(A[m, :]) & nz(B[:, n])|: matches, one per TPPE cycle
    input_spikes: int
    input_spike_sparsity: float  # fraction of zero bits in A (T x M x K)
    input_silent_ratio: float  # fraction of all-zero words in A
    weight_sparsity: float
    output_spikes: int  # after the strong-mode mask, if any
    output_silent_ratio: float
    acc_bits_required: int
    mem_bits_required: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, eq=False)
class LayerResult:
    """Everything the golden model computes for one layer.

    Attributes
    ----------
    o : int64 (T, M, N)          integer pre-activations O[t] (residual included)
    pseudo : int64 (M, N)        pseudo-accumulator at the end of each fiber (bias included)
    correction : int64 (T, M, N) correction accumulators
    membrane : int64 (T, M, N)   X[t] = O[t] + U[t-1], the value compared with the threshold
    out_words : uint16 (M, N)    output spike words (bit t = timestep t), strong mask applied
    out_fiber : Fibers           output fibers, one per row m over n (input of the next layer)
    stats : LayerStats
    """

    o: np.ndarray
    pseudo: np.ndarray
    correction: np.ndarray
    membrane: np.ndarray
    out_words: np.ndarray
    out_fiber: Fibers
    stats: LayerStats = field(repr=False)

    def digest(self) -> str:
        """sha256 of the output words (uint16 little-endian, row-major M x N)."""
        return words_digest(self.out_words)


def words_digest(words: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(words, dtype="<u2").tobytes()).hexdigest()


def check_gemm(words, weights, T: int):
    """Validate the GEMM operands every model shares: uint16 words (M, K) no wider than T bits and
    int8 weights (K, N). Returns them as arrays; raises ValueError naming what is wrong."""
    words, weights = np.asarray(words), np.asarray(weights)
    if not isinstance(T, (int, np.integer)) or not 1 <= T <= MAX_T:
        raise ValueError(f"T must be an integer in 1..{MAX_T}, got {T!r}")
    if words.dtype != np.uint16 or words.ndim != 2:
        raise ValueError(f"spike words must be uint16 (M, K), got {words.dtype} {words.shape}")
    if int(words.max(initial=0)) >> T:
        raise ValueError(f"spike words have bits above T={T}: max word {int(words.max())}")
    if weights.dtype != np.int8 or weights.ndim != 2:
        raise ValueError(f"weights must be int8 (K, N), got {weights.dtype} {weights.shape}")
    if words.shape[1] != weights.shape[0]:
        raise ValueError(f"K mismatch: spikes have K={words.shape[1]}, weights K={weights.shape[0]}")
    return words, weights


def _check_operands(words: np.ndarray, weights: np.ndarray, bias: np.ndarray, T: int,
                    context: str = "layer"):
    check_gemm(words, weights, T)
    if bias.shape != (weights.shape[1],) or not np.issubdtype(bias.dtype, np.integer):
        raise ValueError(f"bias must be integer of shape ({weights.shape[1]},), got {bias.dtype} {bias.shape}")
    problem = int_range_problem(bias, BIAS_BITS)
    if problem:
        raise ArithmeticOverflow(f"{context}: bias {problem}")
    if (1 << (BIAS_BITS - 1)) + weights.shape[0] * 128 >= _EXACT_LIMIT:
        raise ValueError(f"{context}: layer too large for exact evaluation (K = {weights.shape[0]})")


def timestep_bits(words: np.ndarray, T: int, dtype=np.float64) -> np.ndarray:
    """(T, M, K) 0/1 planes of the spike words in ``dtype`` (operands for exact BLAS products)."""
    shifts = np.arange(T, dtype=np.uint16)[:, None, None]
    return ((words[None] >> shifts) & 1).astype(dtype)


def match_counts(words: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Matches per output neuron: int64 (M, N), ``|nz(A[m, :]) & nz(B[:, n])|``."""
    dt = _exact_dtype(words.shape[1])
    nz_a = (words != 0).astype(dt)
    nz_b = (weights != 0).astype(dt)
    return np.rint(nz_a @ nz_b).astype(np.int64)


def effectual_ops(words: np.ndarray, weights: np.ndarray) -> int:
    """Total matches ``sum over (m, n) of |nz(A[m, :]) & nz(B[:, n])|`` = the sum of
    :func:`match_counts`, counted per k (rows of A with a spike at k times columns of B with a
    weight at k) without the (M, N) product."""
    per_k_a = (words != 0).sum(axis=0, dtype=np.int64)
    per_k_b = (weights != 0).sum(axis=1, dtype=np.int64)
    return int(per_k_a @ per_k_b)


def tppe_accumulate(words, weights, bias, T: int, context: str = "layer"):
    """The TPPE's speculative arithmetic: returns (pseudo (M, N), correction (T, M, N)) as int64.

    Raises ArithmeticOverflow on a bias outside int32, ValueError on operands of the wrong dtype
    or shape."""
    words, weights, bias = np.asarray(words), np.asarray(weights), np.asarray(bias)
    _check_operands(words, weights, bias, T, context)
    M, K = words.shape
    dt = _exact_dtype(K)
    # One BLAS product for everything: plane 0 = nz(A) (every match, the pseudo-accumulator), planes
    # 1..T = bit_t(A). A match whose bit t is 0 was over-counted at timestep t, so
    # correction[t] = (nz - bit_t) @ B = nz @ B - bit_t @ B, exactly, in integers.
    planes = np.empty((T + 1, M, K), dtype=dt)
    np.not_equal(words, 0, out=planes[0])
    planes[1:] = timestep_bits(words, T, dt)
    prod = np.rint(planes.reshape((T + 1) * M, K) @ weights.astype(dt)).astype(np.int64)
    prod = prod.reshape(T + 1, M, weights.shape[1])
    pseudo = prod[0] + bias.astype(np.int64)[None, :]
    correction = prod[0][None] - prod[1:]
    return pseudo, correction


def psums(words, weights, bias, T: int, context: str = "layer") -> np.ndarray:
    """Direct definition of O[t] = bias + A[t] @ B: int64 (T, M, N)."""
    words, weights, bias = np.asarray(words), np.asarray(weights), np.asarray(bias)
    _check_operands(words, weights, bias, T, context)
    dt = _exact_dtype(words.shape[1])
    planes = timestep_bits(words, T, dt)
    return np.rint(planes @ weights.astype(dt)).astype(np.int64) + bias.astype(np.int64)[None, None, :]


def plif(o: np.ndarray, lif: LIFParams):
    """P-LIF: all T timesteps of every neuron at once.

    Returns (out_words uint16 (...), membrane int64 (T, ...)) where membrane[t] = X[t].

    ``o`` must be integer and fit 62 signed bits (X = O + U, |U| < |X|, stays inside int64);
    else ValueError / ArithmeticOverflow, never a wrapped cast.
    """
    o = np.asarray(o)
    problem = int_range_problem(o, 62)
    if problem:
        raise (ValueError if "dtype" in problem else ArithmeticOverflow)(f"P-LIF input O[t] {problem}")
    o = o.astype(np.int64, copy=False)
    T = o.shape[0]
    words = np.zeros(o.shape[1:], dtype=np.uint16)
    membrane = np.empty_like(o)
    u = np.zeros(o.shape[1:], dtype=np.int64)
    for t in range(T):  # T <= 16 steps, each vectorized over all neurons
        x = o[t] + u
        fired = x >= lif.threshold
        membrane[t] = x
        words |= fired.astype(np.uint16) << np.uint16(t)
        u = np.where(fired, 0, x >> lif.decay_shift)
    return words, membrane


def strong_mask(words: np.ndarray, n_mask: int = 1) -> np.ndarray:
    """Zero the words with 1..n_mask spikes (n_mask = 1 is LoAS's "strong" mode)."""
    if n_mask not in (0, 1, 2):
        raise ValueError(f"n_mask must be 0, 1 or 2, got {n_mask!r}")
    count = np.bitwise_count(words)
    return np.where((count >= 1) & (count <= n_mask), np.uint16(0), words).astype(np.uint16)


def compress_output(out_words: np.ndarray, *, n_mask: int = 0, chunk_bits: int = 128) -> Fibers:
    """The output compressor: output fibers per row m (over n); n_mask = 1 is the strong mode."""
    return Fibers.from_dense(strong_mask(np.asarray(out_words, dtype=np.uint16), n_mask), chunk_bits)


def check_residual(residual, T: int, M: int, N: int, context: str = "layer") -> np.ndarray:
    """Validate a residual input current: integer, int32 range, broadcastable to (T, M, N). Returns
    it as int64 (T, M, N); raises ValueError naming the dtype or shape at fault and
    ArithmeticOverflow on a value outside int32."""
    residual = np.asarray(residual)
    if not np.issubdtype(residual.dtype, np.integer):
        raise ValueError(f"{context}: residual must be an integer array, got {residual.dtype}")
    problem = int_range_problem(residual, RESIDUAL_BITS)
    if problem:
        raise ArithmeticOverflow(f"{context}: residual {problem}")
    try:
        return np.broadcast_to(residual.astype(np.int64, copy=False), (T, M, N))
    except ValueError:
        raise ValueError(f"{context}: residual of shape {residual.shape} does not broadcast to "
                         f"(T, M, N) = {(T, M, N)}") from None


def _check_width(name: str, values: np.ndarray, bits: int | None, context: str) -> int:
    lo, hi = int(values.min(initial=0)), int(values.max(initial=0))
    need = signed_bits(hi, lo)
    if bits is not None and need > bits:
        bad = hi if hi.bit_length() + 1 > bits else lo
        raise ArithmeticOverflow(
            f"{context}: {name} value {bad} does not fit the declared {bits}-bit signed width "
            f"(needs {need} bits)"
        )
    return need


def run_layer(
    words,
    weights,
    bias,
    lif: LIFParams,
    T: int,
    *,
    n_mask: int = 0,
    chunk_bits: int = 128,
    widths: Widths = Widths(),
    context: str = "layer",
    residual=None,
) -> LayerResult:
    """Run one layer through the golden model.

    Parameters
    ----------
    words : uint16 (M, K)   packed input spike words (bit t = timestep t)
    weights : int8 (K, N)   weights, 0 = pruned
    bias : integer (N,)     bias per output channel, added once per timestep
    lif : LIFParams
    T : int                 timesteps, 1..16
    n_mask : int            0 normal; 1 strong output compression (drop one-spike words); 2 also two
    chunk_bits : int        bitmask chunk width of the output fibers
    widths : Widths         declared datapath widths; None fields are only reported
    context : str           prefix of error messages (e.g. "traces/default/conv3.npz")
    residual : integer array broadcastable to (T, M, N), optional
                            input current added to O[t] before the P-LIF (a residual block's
                            shortcut, in this layer's integer units); None = zero. It is checked
                            against the accumulator width like the other accumulations.

    Raises
    ------
    ValueError
        On operands of the wrong dtype or shape (the residual included).
    ArithmeticOverflow
        When an input (bias, residual) or a computed value does not fit its declared width.
    """
    words, weights, bias = np.asarray(words), np.asarray(weights), np.asarray(bias)
    pseudo, correction = tppe_accumulate(words, weights, bias, T, context)
    o = pseudo[None] - correction
    res_need = 0
    if residual is not None:
        r = check_residual(residual, T, words.shape[0], weights.shape[1], context)
        res_need = _check_width("residual", r, widths.acc_bits, context)
        o = o + r
    out_words, membrane = plif(o, lif)
    acc_need = max(
        _check_width("pseudo-accumulator", pseudo, widths.acc_bits, context),
        _check_width("correction accumulator", correction, widths.acc_bits, context),
        res_need,
        _check_width("O[t]", o, widths.acc_bits, context),
    )
    mem_need = _check_width("membrane", membrane, widths.mem_bits, context)
    out_words = strong_mask(out_words, n_mask)
    out_fiber = Fibers.from_dense(out_words, chunk_bits)
    M, K = words.shape
    N = weights.shape[1]
    n_bits = T * M * K
    n_spikes = int(np.bitwise_count(words).sum(dtype=np.int64))
    stats = LayerStats(
        T=int(T),
        M=M,
        K=K,
        N=N,
        effectual_ops=effectual_ops(words, weights),
        input_spikes=n_spikes,
        input_spike_sparsity=1.0 - n_spikes / n_bits if n_bits else 1.0,
        input_silent_ratio=float((words == 0).mean()) if words.size else 1.0,
        weight_sparsity=float((weights == 0).mean()) if weights.size else 1.0,
        output_spikes=int(np.bitwise_count(out_words).sum(dtype=np.int64)),
        output_silent_ratio=float((out_words == 0).mean()) if out_words.size else 1.0,
        acc_bits_required=acc_need,
        mem_bits_required=mem_need,
    )
    return LayerResult(o, pseudo, correction, membrane, out_words, out_fiber, stats)
