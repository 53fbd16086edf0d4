"""Golden model against a deliberately naive per-element reference, and section 9 bounds."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from sim.errors import ArithmeticOverflow
from sim.fibers import pack_spikes, unpack_words
from sim.golden import (LIFParams, Widths, compress_output, match_counts, plif, psums, run_layer,
                        safe_widths, strong_mask, tppe_accumulate)


def naive_layer(spikes, B, bias, threshold, shift, n_mask):
    """Textbook loops straight from spec/loas.md sections 1, 5, 7 (no vectorization, no tricks)."""
    T, M, K = spikes.shape
    N = B.shape[1]
    O = [[[0] * N for _ in range(M)] for _ in range(T)]
    for t in range(T):
        for m in range(M):
            for n in range(N):
                acc = int(bias[n])
                for k in range(K):
                    if spikes[t, m, k]:
                        acc += int(B[k, n])
                O[t][m][n] = acc
    words = [[0] * N for _ in range(M)]
    for m in range(M):
        for n in range(N):
            u = 0
            for t in range(T):
                x = O[t][m][n] + u
                if x >= threshold:
                    words[m][n] |= 1 << t
                    u = 0
                else:
                    u = x // (2 ** shift)  # floor division == arithmetic shift
            c = bin(words[m][n]).count("1")
            if 1 <= c <= n_mask:
                words[m][n] = 0
    return np.array(O, dtype=np.int64), np.array(words, dtype=np.uint16)


@st.composite
def layers(draw):
    T = draw(st.integers(1, 8))
    M = draw(st.integers(1, 6))
    K = draw(st.sampled_from([1, 3, 17, 127, 128, 129, 200]))
    N = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    spike_density = draw(st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]))
    weight_density = draw(st.sampled_from([0.0, 0.02, 0.2, 1.0]))
    rng = np.random.default_rng(seed)
    spikes = rng.random((T, M, K)) < spike_density
    if draw(st.booleans()):
        spikes[:, rng.integers(M)] = False  # an all-silent row
    B = rng.integers(-128, 128, size=(K, N)).astype(np.int8)
    B[rng.random((K, N)) >= weight_density] = 0
    if draw(st.booleans()):
        B[:, rng.integers(N)] = 0  # an all-zero weight column
    bias = rng.integers(-300, 300, size=N)
    threshold = draw(st.integers(1, 400))
    n_mask = draw(st.sampled_from([0, 1, 2]))
    return spikes, B, bias, threshold, n_mask


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers())
def test_golden_matches_naive_reference(layer):
    spikes, B, bias, threshold, n_mask = layer
    T = spikes.shape[0]
    words = pack_spikes(spikes)
    res = run_layer(words, B, bias, LIFParams(threshold), T, n_mask=n_mask)
    O, out = naive_layer(spikes, B, bias, threshold, 2, n_mask)
    np.testing.assert_array_equal(res.o, O)
    np.testing.assert_array_equal(res.out_words, out)
    np.testing.assert_array_equal(res.out_fiber.to_dense(), out)
    # The TPPE's speculation is exact: O[t] = pseudo - correction[t], and the direct definition agrees.
    np.testing.assert_array_equal(psums(words, B, bias, T), res.pseudo[None] - res.correction)
    # Section 9: effectual operations are the matches, counted naively here.
    nz_a, nz_b = spikes.any(axis=0), B != 0
    naive_ops = sum(int((nz_a[m] & nz_b[:, n]).sum()) for m in range(nz_a.shape[0]) for n in range(B.shape[1]))
    assert res.stats.effectual_ops == naive_ops
    assert res.stats.output_spikes == int(sum(bin(int(w)).count("1") for w in out.ravel()))
    assert res.stats.input_silent_ratio == pytest.approx(float((~nz_a).mean()))


def test_pseudo_and_correction_on_hand_example():
    # Paper's example: a word that fires at t0 and t2 (paper writes 1010, t0 first) is 0b0101 here;
    # its weight goes into the pseudo-accumulator once and is corrected at t1 and t3.
    words = np.array([[0b0101, 0b1111, 0]], dtype=np.uint16)
    B = np.array([[5], [7], [100]], dtype=np.int8)
    pseudo, corr = tppe_accumulate(words, B, np.array([3]), 4)
    assert pseudo.tolist() == [[3 + 5 + 7]]
    assert corr[:, 0, 0].tolist() == [0, 5, 0, 5]
    assert psums(words, B, np.array([3]), 4)[:, 0, 0].tolist() == [15, 10, 15, 10]


def test_plif_hand_example():
    # threshold 10: t0 x=8 no fire, u=2; t1 x=2+9=11 fire, u=0; t2 x=-5 -> u=-2 (floor); t3 x=-2+12=10 fire
    o = np.array([8, 9, -5, 12], dtype=np.int64).reshape(4, 1)
    words, mem = plif(o, LIFParams(10))
    assert mem[:, 0].tolist() == [8, 11, -5, 10]
    assert int(words[0]) == 0b1010


def test_strong_mask_and_compressor():
    words = np.array([[0, 1, 2, 3, 8, 15]], dtype=np.uint16)
    assert strong_mask(words, 1).tolist() == [[0, 0, 0, 3, 0, 15]]
    assert strong_mask(words, 2).tolist() == [[0, 0, 0, 0, 0, 15]]
    assert strong_mask(words, 0).tolist() == words.tolist()
    f = compress_output(words, n_mask=1, chunk_bits=8)
    assert f.mask[0].tolist() == [False, False, False, True, False, True, False, False]
    assert f.values.tolist() == [3, 15]
    with pytest.raises(ValueError, match="n_mask"):
        strong_mask(words, 3)


def test_overflow_is_reported_never_wrapped():
    words = np.full((1, 40), 0b1111, dtype=np.uint16)
    B = np.full((40, 1), 127, dtype=np.int8)
    res = run_layer(words, B, np.array([0]), LIFParams(1 << 20), 4)
    assert res.stats.acc_bits_required == 14  # 40 * 127 = 5080 needs 14 signed bits
    with pytest.raises(ArithmeticOverflow, match=r"5080 does not fit the declared 12-bit"):
        run_layer(words, B, np.array([0]), LIFParams(1 << 20), 4, widths=Widths(acc_bits=12), context="L")
    # safe_widths really is safe for the worst case of its K
    w = safe_widths(40, 8, 0)
    worst = np.full((40, 1), -128, dtype=np.int8)
    run_layer(words, worst, np.array([0]), LIFParams(1), 4, widths=w)


def test_operand_errors():
    w = np.zeros((2, 3), np.uint16)
    with pytest.raises(ValueError, match="K mismatch"):
        run_layer(w, np.zeros((4, 2), np.int8), np.zeros(2, int), LIFParams(1), 4)
    with pytest.raises(ValueError, match="int8"):
        run_layer(w, np.zeros((3, 2), np.int16), np.zeros(2, int), LIFParams(1), 4)
    with pytest.raises(ValueError, match="bits above T=2"):
        run_layer(np.full((2, 3), 4, np.uint16), np.zeros((3, 2), np.int8), np.zeros(2, int), LIFParams(1), 2)
    with pytest.raises(ValueError, match="threshold"):
        LIFParams(0)


def test_bounds_of_section_9():
    rng = np.random.default_rng(1)
    spikes = rng.random((4, 64, 300)) < 0.2
    words = pack_spikes(spikes)
    B = (rng.integers(-127, 128, (300, 16)) * (rng.random((300, 16)) < 0.1)).astype(np.int8)
    res = run_layer(words, B, np.zeros(16, int), LIFParams(50), 4)
    mc = match_counts(words, B)
    assert res.stats.effectual_ops == int(mc.sum())
    # matches can never exceed either operand's non-zeros
    assert (mc <= (words != 0).sum(1)[:, None]).all() and (mc <= (B != 0).sum(0)[None, :]).all()
    np.testing.assert_array_equal(unpack_words(words, 4), spikes)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.integers(0, 2**32 - 1))
def test_residual_is_added_to_every_timestep_before_the_plif(layer, seed):
    spikes, B, bias, threshold, n_mask = layer
    T, M, _ = spikes.shape
    N = B.shape[1]
    R = np.random.default_rng(seed).integers(-400, 400, size=(T, M, N)).astype(np.int32)
    res = run_layer(pack_spikes(spikes), B, bias, LIFParams(threshold), T, n_mask=n_mask, residual=R)
    # the naive reference with the residual folded into a per-(t, m, n) "bias": same O, same words
    O, _ = naive_layer(spikes, B, bias, threshold, 2, n_mask)
    np.testing.assert_array_equal(res.o, O + R)
    words, _ = plif(O + R, LIFParams(threshold))
    np.testing.assert_array_equal(res.out_words, strong_mask(words, n_mask))
    # the TPPE accumulators do not see the residual; O[t] = pseudo - correction[t] + R[t]
    np.testing.assert_array_equal(res.o, res.pseudo[None] - res.correction + R)


def test_residual_broadcasts_and_is_checked():
    words = np.array([[0b01, 0b11]], dtype=np.uint16)
    B = np.array([[3], [4]], dtype=np.int8)
    # per-channel residual (N,) = the same current at every t and m
    res = run_layer(words, B, np.array([0]), LIFParams(100), 2, residual=np.array([10]))
    assert res.o[:, 0, 0].tolist() == [3 + 4 + 10, 4 + 10]
    with pytest.raises(ValueError, match=r"residual of shape \(3,\) does not broadcast to \(T, M, N\) = \(2, 1, 1\)"):
        run_layer(words, B, np.array([0]), LIFParams(1), 2, residual=np.zeros(3, np.int32))
    with pytest.raises(ValueError, match="residual must be an integer array, got float64"):
        run_layer(words, B, np.array([0]), LIFParams(1), 2, residual=np.zeros((2, 1, 1)))
    # the residual counts towards the accumulator width and is never wrapped
    big = np.full((2, 1, 1), 5000, np.int32)
    assert run_layer(words, B, np.array([0]), LIFParams(1 << 20), 2, residual=big).stats.acc_bits_required == 14
    with pytest.raises(ArithmeticOverflow, match="L: residual value 5000 does not fit the declared 12-bit"):
        run_layer(words, B, np.array([0]), LIFParams(1 << 20), 2, residual=big, widths=Widths(acc_bits=12),
                  context="L")


def test_int_range_problem_compares_bounds_and_never_overflows():
    from sim.golden import int_range_problem

    assert int_range_problem(np.array([-2**31, 2**31 - 1]), 32) is None
    assert int_range_problem(np.array([], np.int64), 32) is None
    assert "value -9223372036854775808 outside the int32" in int_range_problem(np.array([-2**63]), 32)
    assert "value 9223372036854775808 outside" in int_range_problem(np.array([2**63], np.uint64), 32)
    assert "value 18446744073709551615 outside" in int_range_problem(np.array([2**64 - 1], np.uint64), 32)
    assert "value -2147483649 outside" in int_range_problem(np.array([5, -2**31 - 1]), 32)
    assert "not an integer" in int_range_problem(np.array([1.0]), 32)


@pytest.mark.parametrize("bias, value", [(np.array([-2**63]), "-9223372036854775808"),
                                         (np.array([2**63], np.uint64), "9223372036854775808"),
                                         (np.array([2**31]), "2147483648")])
def test_golden_refuses_a_bias_outside_its_declared_width(bias, value):
    words = np.full((2, 3), 0b11, np.uint16)
    with pytest.raises(ArithmeticOverflow, match=rf"^L: bias value {value} outside the int32 range"):
        run_layer(words, np.ones((3, 1), np.int8), bias, LIFParams(1), 2, context="L")
    with pytest.raises(ArithmeticOverflow, match="residual value -2147483649"):
        run_layer(words, np.ones((3, 1), np.int8), np.zeros(1, int), LIFParams(1), 2,
                  residual=np.array([-2**31 - 1]))
    with pytest.raises(ValueError, match="threshold"):
        LIFParams(2**31)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_int32_bias_and_int8_weights_golden_equals_torch_integer_mode(data):
    """Golden model == torch integer mode for biases and thresholds anywhere in int32, weights
    anywhere in int8: no value wraps on either side."""
    torch = pytest.importorskip("torch")
    from models.export import integer_layer_forward, pack_words
    from models.layers import QuantParams, SpikeLinear

    T, B, K, N = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 12)), \
        data.draw(st.integers(1, 4))
    i32 = st.integers(-2**31, 2**31 - 1)
    bias = np.array(data.draw(st.lists(i32, min_size=N, max_size=N)), np.int64)
    weights = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=K * N, max_size=K * N)),
                       np.int8).reshape(K, N)
    threshold = data.draw(st.integers(1, 2**31 - 1))
    spikes = np.array(data.draw(st.lists(st.booleans(), min_size=T * B * K, max_size=T * B * K))).reshape(T, B, K)
    layer = SpikeLinear(K, N)
    layer.quant = QuantParams(torch.from_numpy(weights.T.copy()), torch.from_numpy(bias), threshold, 1.0)
    x = torch.from_numpy(spikes.astype(np.float32))
    torch_o = layer._int_current(x).numpy()
    torch_words = pack_words(integer_layer_forward(layer, x))
    res = run_layer(pack_spikes(spikes), weights, bias, LIFParams(threshold), T)
    np.testing.assert_array_equal(res.o, torch_o)
    np.testing.assert_array_equal(res.out_words, torch_words)
    exact = bias[None, None, :] + np.einsum("tbk,kn->tbn", spikes.astype(object), weights.astype(object))
    assert (res.o.astype(object) == exact).all()  # Python ints: nothing wrapped


def test_plif_refuses_inputs_that_would_wrap_in_int64():
    with pytest.raises(ArithmeticOverflow, match="O\\[t\\] value 9223372036854775808 outside the int62"):
        plif(np.array([[2**63]], np.uint64), LIFParams(1))
    with pytest.raises(ValueError, match="not an integer"):
        plif(np.array([[1.5]]), LIFParams(1))
