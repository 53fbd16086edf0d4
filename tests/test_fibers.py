import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from sim.fibers import Fibers, pack_spikes, popcount16, spike_fibers, unpack_words, weight_fibers


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 16), st.integers(1, 5), st.integers(1, 300), st.floats(0, 1), st.integers(0, 2**31))
def test_spike_pack_and_fiber_round_trip(T, M, K, density, seed):
    rng = np.random.default_rng(seed)
    spikes = rng.random((T, M, K)) < density
    words = pack_spikes(spikes)
    assert words.dtype == np.uint16
    np.testing.assert_array_equal(unpack_words(words, T), spikes)
    np.testing.assert_array_equal(popcount16(words), spikes.sum(0))
    f = spike_fibers(words, chunk_bits=128)
    assert f.n_chunks == -(-K // 128) and f.mask.shape == (M, f.n_chunks * 128)
    assert not f.mask[:, K:].any()
    np.testing.assert_array_equal(f.to_dense(), words)
    for m in range(M):
        np.testing.assert_array_equal(f.fiber_values(m), words[m][words[m] != 0])
        ints = f.chunk_ints(m)
        for c, v in enumerate(ints):
            for i in range(128):
                k = c * 128 + i
                assert ((v >> i) & 1) == (k < K and words[m, k] != 0)
    assert f.storage_bits(T) == f.mask.size + T * int((words != 0).sum())


def test_word_bit_order_matches_paper_example():
    spikes = np.array([1, 0, 1, 0], dtype=bool).reshape(4, 1)  # fires at t0 and t2 (paper: 1010)
    assert int(pack_spikes(spikes)[0]) == 0b0101


def test_weight_fibers_are_columns():
    B = np.array([[0, 3], [5, 0], [0, -2]], dtype=np.int8)
    f = weight_fibers(B, chunk_bits=4)
    assert f.rows == 2
    assert f.fiber_values(0).tolist() == [5] and f.fiber_values(1).tolist() == [3, -2]
    np.testing.assert_array_equal(f.to_dense().T, B)
    assert f.chunk_ints(1) == [0b101]


def test_fiber_errors():
    with pytest.raises(ValueError, match="power of two"):
        Fibers.from_dense(np.zeros((1, 4)), chunk_bits=12)
    with pytest.raises(ValueError, match="int8"):
        weight_fibers(np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError, match="T must"):
        pack_spikes(np.zeros((17, 2), bool))
    with pytest.raises(ValueError, match="binary"):
        pack_spikes(np.full((2, 2), 2))
