"""fidelity: paper (sim/paper.py): the LoAS authors' cost models against every figure of the
synthetic vector in ../shared/spec/artifact.md section 8, and the parts of the model on their own."""

import numpy as np
import pytest

from sim.config import load
from sim.errors import ConfigError
from sim.paper import PaperEnergy, fifo_buffer, load_paper_energy, simulate_paper, simulate_words

# design, strong: tot_cycs, tot_comps, total_dram KB, total_sram KB, hit_w, miss_w, hit_x, miss_x
VECTOR = {
    ("loas-mntk", False): (33864, 380101, 104.146484, 384.625488, 75280, 60, 30234, 14),
    ("loas-mntk", True): (9729, 84858, 98.415039, 237.598145, 75280, 60, 6758, 14),
    ("loas-nmtk", False): (30919, 380101, 62.520508, 482.234375, 45189, 15, 52871, 63),
    ("sparten", False): (39511, 475706, 32.981445, 603.006836, 180801, 15, 66247, 36),
    ("gospa", False): (38087, 475706, 141.498657, 242.712891, 120534, 10, 66267, 16),
    ("gamma", False): (55437, 475706, 109.136841, 7533.735474, 301350, 10, 18856, 82),
}
KEYS = {
    "loas-mntk": {"sram_w": 147.148438, "sram_x": 189.288574, "dram_w": 73.574219, "dram_x": 3.692383,
                  "dram_o": 3.692383, "sram_wb": 36.621094, "dram_wb": 18.310547, "sram_xb": 11.567383,
                  "dram_xb": 4.876953},
    "gospa": {"sram_w": 127.702148, "sram_x": 9.24707, "dram_w": 9.983398, "dram_x": 1.155884, "dram_o": 109.375,
              "sram_wsp": 31.787109, "sram_csr": 73.976562, "dram_wsp": 2.490234, "dram_csr": 18.494141},
    "gamma": {"sram_w": 4134.871094, "sram_x": 3.467651, "sram_o": 273.4375, "dram_w": 14.714844,
              "dram_x": 1.155884, "dram_o": 68.359375, "sram_x_a": 20.805908, "sram_w_b": 3101.15332,
              "dram_x_a": 13.870605, "dram_w_b": 11.036133},
}


@pytest.fixture(scope="module")
def vector():
    rng = np.random.default_rng(12345)
    T, M, K, N = 4, 70, 300, 100
    X = (rng.random((T, M, K)) < 0.15).astype(np.float32)
    X[:, :17, :] = 0.0
    W = rng.standard_normal((K, N)).astype(np.float32)
    W = W * (rng.random((K, N)) < 0.5)  # pruned entries include -0.0
    W[:, 32:64] = W[:, 0:32]
    return X, W


@pytest.mark.parametrize("design, strong", list(VECTOR))
def test_section_8_vector(vector, design, strong):
    X, W = vector
    r = simulate_paper(design, X, W, strong=strong)
    cyc, comps, dram, sram, hw, mw, hx, mx = VECTOR[design, strong]
    assert (r.cycles, r.comps, r.hit_w, r.miss_w, r.hit_x, r.miss_x) == (cyc, comps, hw, mw, hx, mx)
    assert r.total_dram_kb == pytest.approx(dram, abs=1e-6)
    assert r.total_sram_kb == pytest.approx(sram, abs=1e-6)
    if not strong and design in KEYS:
        got = {k.replace("_traffic", ""): v for k, v in r.traffic_kb.items()}
        assert set(got) == set(KEYS[design])
        for k, v in KEYS[design].items():
            assert got[k] == pytest.approx(v, abs=1e-6), k


def test_energy_formula_and_constants(vector):
    X, W = vector
    e = load_paper_energy()
    assert e == PaperEnergy()  # the YAML holds the script's constants, as the defaults do
    r = simulate_paper("sparten", X, W)
    want = r.cycles / 800 * (0.5 + 124.48) + 2.9 * r.total_dram_kb * 1024 + 0.0681 * r.total_sram_kb * 1024 \
        + 6.15 * r.comps
    assert r.energy == pytest.approx(want, rel=1e-12)
    g = simulate_paper("gospa", X, W)
    assert g.energy_parts["compute"] == pytest.approx(1.34 * 1.3 * g.comps)
    assert g.energy_parts["leakage"] == pytest.approx(g.cycles / 800 * 179.0)


def test_buffer_is_content_addressed_fifo():
    # ids 0,1,0: the second 0 hits; capacity 5 with nnz 3,3: 1 evicts 0 (FIFO), so 0 misses again
    missed, hit, miss = fifo_buffer(np.array([0, 1, 0, 0]), np.array([3, 3, 3, 3]), 6)
    assert missed.tolist() == [True, True, False, False] and (hit, miss) == (2 + 2 + 3 + 3, 2)
    missed, hit, miss = fifo_buffer(np.array([0, 1, 0]), np.array([3, 3, 3]), 5)
    assert missed.tolist() == [True, True, True] and miss == 3
    missed, hit, miss = fifo_buffer(np.array([0, 0]), np.array([0, 0]), 1)  # empty tile: -1 on its miss
    assert (hit, miss) == (-1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        fifo_buffer(np.array([0]), np.array([9]), 8)


def test_loas_cycles_ignore_T_and_trace_operands_agree(vector):
    X, W = vector
    words = (X.astype(np.uint16) << np.arange(4, dtype=np.uint16)[:, None, None]).sum(0, dtype=np.uint16)
    a = simulate_words("loas", words, W, 4)
    assert a.cycles == VECTOR["loas-mntk", False][0]
    # the same words as 8-timestep words (upper bits silent): LoAS's cost does not move
    assert simulate_words("loas", words, W, 8).cycles == a.cycles
    assert simulate_words("loas", words, W, 4, loop_order="nmtk").cycles == VECTOR["loas-nmtk", False][0]


def test_energy_yaml_errors_name_the_key(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("designs:\n  gamma: {comp_pj: -1}\n")
    with pytest.raises(ConfigError, match="designs.gamma.comp_pj"):
        load(p, PaperEnergy)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_both_fidelities_count_the_same_work(seed):
    """Effectual operations agree between the paper method and our cycle-level models (so the
    fidelity report's 'work' cause is zero at P = 16), and the paper's cycles respect the work bound."""
    from sim.config import LoASConfig
    from sim.designs import PAPER, simulate
    from sim.synthetic import random_weights, random_words

    rng = np.random.default_rng(seed)
    M, K, N = rng.integers(1, 60), rng.integers(1, 400), rng.integers(1, 70)
    words, weights = random_words(rng, (M, K), 4, 0.6), random_weights(rng, (K, N), 0.1)
    for d in PAPER:
        p = simulate_words(d, words, weights, 4)
        ours = simulate(d, words, weights, LoASConfig(), T=4)
        assert p.comps == ours.effectual_ops, d
        assert p.cycles * 16 >= p.comps and p.imbalance >= 0, d
