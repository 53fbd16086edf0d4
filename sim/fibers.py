"""LoAS compressed formats: packed spike words and bitmask fibers (spec/loas.md section 3).

Conventions (used by sim/, hw/ and the tests alike):

* A spike word packs the T spike bits of one (m, k) position; **bit t is timestep t** (t0 is the
  least significant bit). The paper writes words t0 first, so its ``1010`` (fires at t0 and t2) is
  our integer ``0b0101 == 5``. A word of 0 is a *silent* neuron.
* A fiber is one row of spike words A[m, :] or one column of weights B[:, n]: a bitmask with one bit
  per position (1 = non-zero value), a pointer into a shared value array, and the non-zero values in
  position order.
* Bitmasks are cut into chunks of ``chunk_bits`` positions (128 in LoAS); the last chunk is padded
  with zeros. Chunk c of row r as an integer has bit i set when position ``c*chunk_bits + i`` is
  non-zero (position order = little-endian bit order), which is how the RTL memories are loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_T = 16


def _check_t(T: int) -> None:
    if not isinstance(T, (int, np.integer)) or not 1 <= T <= MAX_T:
        raise ValueError(f"T must be an integer in 1..{MAX_T}, got {T!r}")


def pack_spikes(spikes: np.ndarray) -> np.ndarray:
    """Pack spikes of shape (T, ...) with values in {0, 1} into uint16 words of shape (...)."""
    spikes = np.asarray(spikes)
    T = spikes.shape[0]
    _check_t(T)
    if spikes.dtype != np.bool_ and not np.isin(spikes, (0, 1)).all():
        raise ValueError("spikes must be binary (0 or 1)")
    weights = (np.uint16(1) << np.arange(T, dtype=np.uint16)).reshape((T,) + (1,) * (spikes.ndim - 1))
    # Sum of disjoint powers of two == bitwise OR; uint16 holds T <= 16 bits.
    return (spikes.astype(np.uint16) * weights).sum(axis=0, dtype=np.uint16)


def unpack_words(words: np.ndarray, T: int) -> np.ndarray:
    """Inverse of :func:`pack_spikes`: uint words (...) -> bool spikes (T, ...)."""
    _check_t(T)
    words = np.asarray(words)
    shifts = np.arange(T, dtype=np.uint16).reshape((T,) + (1,) * words.ndim)
    return ((words.astype(np.uint16)[None] >> shifts) & 1).astype(bool)


def popcount16(words: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint16 word (number of spikes of a packed neuron)."""
    return np.bitwise_count(np.asarray(words).astype(np.uint16))


@dataclass(frozen=True, eq=False)
class Fibers:
    """A set of R fibers of logical length L, as stored by LoAS.

    Parameters
    ----------
    length : int
        Logical length L of every fiber (K for spike rows and weight columns).
    chunk_bits : int
        Bitmask chunk width (power of two; 128 in LoAS).
    mask : np.ndarray of bool, shape (R, n_chunks * chunk_bits)
        Bitmask; positions >= L are padding and always False.
    ptr : np.ndarray of int64, shape (R + 1,)
        Fiber r's values are ``values[ptr[r]:ptr[r + 1]]``.
    values : np.ndarray, shape (nnz,)
        Non-zero values of all fibers, fiber by fiber, in position order.
    """

    length: int
    chunk_bits: int
    mask: np.ndarray
    ptr: np.ndarray
    values: np.ndarray

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def n_chunks(self) -> int:
        return self.mask.shape[1] // self.chunk_bits

    @property
    def nnz(self) -> int:
        return int(self.ptr[-1])

    @classmethod
    def from_dense(cls, dense: np.ndarray, chunk_bits: int = 128) -> "Fibers":
        """Compress a dense (R, L) array row by row (a fiber per row)."""
        if chunk_bits <= 0 or chunk_bits & (chunk_bits - 1):
            raise ValueError(f"chunk_bits must be a power of two, got {chunk_bits!r}")
        dense = np.asarray(dense)
        if dense.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {dense.shape}")
        R, L = dense.shape
        n_chunks = max(1, -(-L // chunk_bits))
        mask = np.zeros((R, n_chunks * chunk_bits), dtype=bool)
        nz = dense != 0
        mask[:, :L] = nz
        ptr = np.zeros(R + 1, dtype=np.int64)
        np.cumsum(nz.sum(axis=1), out=ptr[1:])
        return cls(length=L, chunk_bits=chunk_bits, mask=mask, ptr=ptr, values=dense[nz])

    def to_dense(self) -> np.ndarray:
        """Decompress to a dense (R, L) array (zeros where the bitmask is 0)."""
        dense = np.zeros((self.rows, self.length), dtype=self.values.dtype)
        dense[self.mask[:, : self.length]] = self.values
        return dense

    def chunk_counts(self) -> np.ndarray:
        """Non-zeros per (fiber, chunk): int array (R, n_chunks)."""
        return self.mask.reshape(self.rows, self.n_chunks, self.chunk_bits).sum(axis=2)

    def chunk_ints(self, row: int) -> list[int]:
        """Bitmask chunks of one fiber as Python ints (bit i = position c*chunk_bits + i)."""
        bits = self.mask[row].reshape(self.n_chunks, self.chunk_bits)
        packed = np.packbits(bits, axis=1, bitorder="little")
        return [int.from_bytes(b.tobytes(), "little") for b in packed]

    def fiber_values(self, row: int) -> np.ndarray:
        return self.values[self.ptr[row] : self.ptr[row + 1]]

    def storage_bits(self, value_bits: int) -> int:
        """Bits LoAS stores for these fibers: 1 per bitmask position plus value_bits per non-zero."""
        return int(self.mask.size + value_bits * self.nnz)


def spike_fibers(words: np.ndarray, chunk_bits: int = 128) -> Fibers:
    """Fibers of the rows A[m, :] of a packed spike matrix (M, K) of uint16 words."""
    words = np.asarray(words)
    if words.dtype != np.uint16:
        raise ValueError(f"spike words must be uint16, got {words.dtype}")
    return Fibers.from_dense(words, chunk_bits)


def weight_fibers(weights: np.ndarray, chunk_bits: int = 128) -> Fibers:
    """Fibers of the columns B[:, n] of an int8 weight matrix (K, N); fiber n is column n."""
    weights = np.asarray(weights)
    if weights.dtype != np.int8:
        raise ValueError(f"weights must be int8, got {weights.dtype}")
    return Fibers.from_dense(weights.T, chunk_bits)
