import pytest

from sim.config import BufferConfig, LoASConfig, load
from sim.errors import ConfigError


def test_default_is_papers_table_iii():
    c = load("loas")
    assert (c.pes, c.timesteps, c.chunk_bits, c.laggy_adders, c.fifo_depth, c.weight_bits) == (16, 4, 128, 16, 8, 8)
    assert c.laggy_cycles == 8 and c.buffer.capacity_kb == 256 and c.clock_mhz == 800.0
    assert c == LoASConfig()
    with pytest.raises(Exception):
        c.pes = 4  # frozen


@pytest.mark.parametrize("text, key, msg", [
    ("pes: 16\npe: 4\n", "pe", "unknown key"),
    ("pes: '16'\n", "pes", "wrong type str"),
    ("pes: true\n", "pes", "wrong type bool"),
    ("pes: 0\n", "pes", "must be >= 1"),
    ("chunk_bits: 100\n", "chunk_bits", "power of two"),
    ("fifo_depth: 0\n", "fifo_depth", "must be >= 1"),
    ("timesteps: 17\n", "timesteps", "1..16"),
    ("laggy_adders: 24\n", "laggy_adders", "divide"),
    ("loop_order: kmnt\n", "loop_order", "mntk"),
    ("row_prefetch: 3\n", "row_prefetch", "wrong type int"),
    ("tile: {m: 16, q: 2}\n", "tile.q", "unknown key"),
    ("buffer: {banks: 0}\n", "buffer.banks", "must be >= 1"),
    ("buffer: 5\n", "buffer", "must be a mapping"),
    ("pes: [16\n", "<yaml>", "not valid YAML"),
    ("max_k: 4608\n", "max_k", "tile.max_k"),
    ("dram_gbps: 128.0\n", "dram_gbps", "dram.data_bits / 8 / dram.beat_cycles"),
    ("dram: {latency: 0}\n", "dram.latency", "must be >= 1"),
    ("dram: {data_bits: 100}\n", "dram.data_bits", "power of two"),
    ("dram: {lat: 3}\n", "dram.lat", "unknown key"),
    ("tile: {a_nnz: 0}\n", "tile.a_nnz", "must be >= 1"),
    ("tile: {m: 16, k: 128}\n", "tile.k", "no longer a setting"),
    ("buffer: {ways: 16}\n", "buffer.ways", "no longer a setting"),
    ("acc_bits: 4\n", "acc_bits", "9..64"),
    ("schedule: greedy\n", "schedule", "lockstep"),
])
def test_errors_name_file_and_key(tmp_path, text, key, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load(p)
    assert ei.value.key == key and str(p) in str(ei.value) and msg in str(ei.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "none.yaml")


def test_partial_file_keeps_defaults(tmp_path):
    p = tmp_path / "small.yaml"
    p.write_text("pes: 4\nclock_mhz: 1000\ntile: {m: 4}\n")
    c = load(p)
    assert c.pes == 4 and c.clock_mhz == 1000.0 and isinstance(c.clock_mhz, float)
    assert c.tile.m == 4 and c.tile.n == 64 and c.timesteps == 4 and c.dram.latency == 20


def test_direct_construction_validates():
    """LoASConfig checks itself on construction (the core's fields through CoreParams)."""
    from sim.params import CoreParams

    with pytest.raises(ValueError, match="pes"):
        LoASConfig(pes=0)
    with pytest.raises(ValueError, match="lookahead"):
        LoASConfig(lookahead=0)
    with pytest.raises(ValueError, match="banks"):
        LoASConfig(buffer=BufferConfig(banks=0))
    assert CoreParams.from_config(LoASConfig(acc_bits=20)).acc_bits == 20


@pytest.mark.parametrize("field, layer", [
    ("rows", dict(M=5)), ("cols", dict(N=5)), ("k", dict(K=9)), ("a_nnz", dict(a=5)), ("b_nnz", dict(b=9)),
    ("bias_bits", dict(bias=1 << 8)),
])
def test_capacity_check_names_the_dimension_that_does_not_fit(field, layer):
    import numpy as np

    from sim.params import Capacity

    cap = Capacity(rows=4, cols=4, k=8, a_nnz=4, b_nnz=8, bias_bits=8)
    M, N, K = layer.get("M", 4), layer.get("N", 4), layer.get("K", 8)
    words = np.zeros((M, K), np.uint16)
    words.flat[:min(layer.get("a", 4), words.size)] = 1
    weights = np.zeros((K, N), np.int8)
    weights.flat[:min(layer.get("b", 8), weights.size)] = 1
    bias = np.full(N, layer.get("bias", 1), np.int64)
    with pytest.raises(ValueError, match=rf"^{field}: the layer has"):
        cap.check(words, weights, bias)
    cap.check(np.ones((4, 1), np.uint16), np.ones((1, 4), np.int8), np.zeros(4, np.int64))  # fits
