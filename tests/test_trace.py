"""Trace format v1: round trip, atomic writes and every loader error path."""

import shutil

import numpy as np
import pytest
import yaml

from sim.errors import TraceError
from sim.golden import LIFParams, run_layer
from sim.synthetic import random_layer, write_random_workload
from sim.trace import Geometry, Layer, Workload, im2col, load_workload, write_layer

LAYERS = {"conv2": Geometry(8, 10, 10, 3, 1, 1, 16), "conv3": Geometry(16, 5, 5, 3, 2, 0, 8),
          "fc1": Geometry.fc(40, 10)}


@pytest.fixture()
def workload(tmp_path):
    return write_random_workload(tmp_path / "wl", LAYERS, T=4, seed=3, samples=2)


def test_round_trip_and_gemm_view(workload):
    wl = load_workload(workload)
    assert wl.layer_names == ["conv2", "conv3", "fc1"] and wl.T == 4
    l3 = wl.layer("conv3")
    g = l3.geometry
    assert (g.M, g.K, g.N) == (4, 144, 8)  # (5 - 3) // 2 + 1 = 2 -> M = 4
    assert l3.words(1).shape == (4, 144) and l3.weights_kn().shape == (144, 8)
    for layer in wl.layers():
        for s in range(layer.samples):
            res = run_layer(layer.words(s), layer.weights_kn(), layer.bias, layer.lif, layer.T, n_mask=layer.n_mask)
            np.testing.assert_array_equal(res.out_words, layer.expected(s))
    assert wl.layer("fc1").words(0).shape == (1, 40)


def test_im2col_matches_torch_unfold_order():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    g = Geometry(3, 7, 6, 3, 2, 1, 4)
    img = rng.integers(0, 16, (3, 7, 6)).astype(np.uint16)
    cols = torch.nn.functional.unfold(torch.from_numpy(img.astype(np.float32))[None], 3, padding=1, stride=2)
    np.testing.assert_array_equal(im2col(img, g), cols[0].T.numpy().astype(np.uint16))


def _rewrite(path, **changes):
    with np.load(path) as z:
        data = dict(z)
    for k, v in changes.items():
        if v is None:
            del data[k]
        else:
            data[k] = v
    np.savez_compressed(path, **data)


@pytest.mark.parametrize("change, field, msg", [
    ({"spike_words": None}, "spike_words", "missing"),
    ({"weight": np.zeros((16, 8, 3, 3), np.int16)}, "weight", "wrong dtype int16"),
    ({"weight": np.zeros((16, 7, 3, 3), np.int8)}, "weight", "K mismatch"),
    ({"spike_words": np.full((2, 8, 10, 10), 17, np.uint16)}, "spike_words", "non-binary spikes: word 17"),
    ({"format_version": np.int64(2)}, "format_version", "unknown version 2"),
    ({"T": np.int64(17)}, "T", "must be in 1..16"),
    ({"T": np.int64(5)}, "T", "manifest says T=4"),
    ({"bias": np.zeros(3, np.int64)}, "bias", "shape"),
    ({"threshold": np.int64(0)}, "threshold", "threshold"),
    ({"n_mask": np.int64(3)}, "n_mask", "0, 1 or 2"),
    ({"geometry": np.array([8, 10, 10, 30, 1, 0, 16])}, "geometry", "empty output"),
    ({"expected_out_words": np.zeros((2, 3, 16), np.uint16)}, "expected_out_words", "shape"),
    ({"spike_words": np.zeros((2, 8, 10, 10), np.float32)}, "spike_words", "wrong dtype float32"),
])
def test_layer_errors_name_file_and_field(workload, change, field, msg):
    path = workload / "conv2.npz"
    _rewrite(path, **change)
    with pytest.raises(TraceError) as ei:
        load_workload(workload).layer("conv2")
    assert ei.value.field == field and str(path) in str(ei.value)
    assert msg in str(ei.value)


def test_truncated_npz(workload):
    path = workload / "conv2.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceError, match=r"conv2.npz: field 'npz': not a readable npz"):
        load_workload(workload).layer("conv2")


@pytest.mark.parametrize("edit, field", [
    (lambda m: m.update(version=9), "version"),
    (lambda m: m.update(format="other"), "format"),
    (lambda m: m.update(T=0), "T"),
    (lambda m: m.update(T="4"), "T"),
    (lambda m: m.pop("layers"), "layers"),
    (lambda m: m["layers"].append(dict(m["layers"][0])), "layers"),
    (lambda m: m["layers"][0].update(kind="pool"), "layers[0].kind"),
    (lambda m: m["layers"][0].update(file="../x.npz"), "layers[0].file"),
    (lambda m: m["layers"][0].update(extra=1), "layers[0]"),
])
def test_manifest_errors(workload, edit, field):
    mpath = workload / "manifest.yaml"
    man = yaml.safe_load(mpath.read_text())
    edit(man)
    mpath.write_text(yaml.safe_dump(man))
    with pytest.raises(TraceError) as ei:
        Workload(workload)
    assert ei.value.field == field and "manifest.yaml" in str(ei.value)


def test_unknown_layer_and_workload_list_what_exists(workload, tmp_path):
    with pytest.raises(TraceError, match="this workload has conv2, conv3, fc1"):
        load_workload(workload).layer("conv9")
    with pytest.raises(TraceError, match="no such workload"):
        load_workload(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.yaml").write_text("{ not: [yaml")
    with pytest.raises(TraceError, match="not valid YAML"):
        Workload(tmp_path / "bad")


def test_writer_refuses_bad_data_and_is_atomic(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    kw = random_layer(rng, Geometry(4, 4, 4, 3, 1, 1, 4), 4)
    target = tmp_path / "l.npz"
    with pytest.raises(TraceError, match="non-binary spikes"):
        write_layer(target, **{**kw, "spike_words": kw["spike_words"] | np.uint16(32)})
    with pytest.raises(TraceError, match="must be int8"):
        write_layer(target, **{**kw, "weight": kw["weight"].astype(np.int16)})
    assert not list(tmp_path.iterdir())
    write_layer(target, **kw)
    before = target.read_bytes()

    # An export interrupted in the middle of writing leaves the old file intact and no temp file.
    def boom(f, **arrays):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(KeyboardInterrupt):
        write_layer(target, **kw)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["l.npz"]
    Layer(target)


def test_sample_out_of_range(workload):
    layer = load_workload(workload).layer("conv2")
    with pytest.raises(TraceError, match="sample"):
        layer.words(5)


def _residual_layer(tmp_path, samples=2):
    """A conv layer with a residual current, its expected outputs from the golden model."""
    rng = np.random.default_rng(5)
    g = Geometry(4, 5, 5, 3, 1, 1, 6)
    kw = random_layer(rng, g, 4, samples=samples, weight_density=0.3)
    res = rng.integers(-200, 200, size=(samples, 4, g.M, g.N))
    kw["expected_out_words"] = np.stack([
        run_layer(im2col(kw["spike_words"][s], g), np.ascontiguousarray(kw["weight"].reshape(g.N, g.K).T),
                  kw["bias"], kw["lif"], 4, residual=res[s]).out_words for s in range(samples)])
    path = write_layer(tmp_path / "r.npz", **kw, residual=res)
    return path, kw, res


def test_residual_round_trip_and_absent_means_none(tmp_path, workload):
    path, kw, res = _residual_layer(tmp_path)
    layer = Layer(path, T=4)
    assert layer.residual.dtype == np.int32 and layer.residual.shape == (2, 4, 25, 6)
    np.testing.assert_array_equal(layer.residual_current(1), res[1])
    for s in range(2):
        out = run_layer(layer.words(s), layer.weights_kn(), layer.bias, layer.lif, 4,
                        residual=layer.residual_current(s)).out_words
        np.testing.assert_array_equal(out, layer.expected(s))
    # the residual matters for this layer, and layers without one have no npz member at all
    plain = run_layer(layer.words(0), layer.weights_kn(), layer.bias, layer.lif, 4).out_words
    assert (plain != layer.expected(0)).any()
    old = load_workload(workload).layer("conv2")
    assert old.residual is None and old.residual_current(0) is None
    with np.load(workload / "conv2.npz") as z:
        assert "residual" not in z.files


@pytest.mark.parametrize("bad, msg", [
    (lambda r: r.astype(np.int64), "wrong dtype int64, expected int32"),
    (lambda r: r.astype(np.float32), "wrong dtype float32, expected int32"),
    (lambda r: r[:, :3], "shape (2, 3, 25, 6), expected (S, T, M, N) = (2, 4, 25, 6)"),
    (lambda r: r[0], "shape (4, 25, 6), expected (S, T, M, N)"),
])
def test_malformed_residual_is_refused_naming_file_and_field(tmp_path, bad, msg):
    path, _, res = _residual_layer(tmp_path)
    _rewrite(path, residual=bad(res.astype(np.int32)))
    with pytest.raises(TraceError) as ei:
        Layer(path, T=4)
    assert ei.value.field == "residual" and str(path) in str(ei.value) and msg in str(ei.value)


def test_writer_refuses_a_bad_residual_before_writing(tmp_path):
    rng = np.random.default_rng(1)
    g = Geometry(2, 3, 3, 1, 1, 0, 2)
    kw = random_layer(rng, g, 4)
    target = tmp_path / "l.npz"
    with pytest.raises(TraceError, match=r"field 'residual': value 2147483648 outside the int32 range"):
        write_layer(target, **kw, residual=np.full((1, 4, 9, 2), 2**31))
    with pytest.raises(TraceError, match=r"field 'residual': shape \(1, 4, 9, 3\), expected"):
        write_layer(target, **kw, residual=np.zeros((1, 4, 9, 3), np.int32))
    with pytest.raises(TraceError, match="field 'residual': must be integer, got float64"):
        write_layer(target, **kw, residual=np.zeros((1, 4, 9, 2)))
    assert not list(tmp_path.iterdir())


def test_im2col_keeps_leading_sample_dimensions():
    rng = np.random.default_rng(4)
    g = Geometry(3, 7, 6, 3, 2, 1, 4)
    imgs = rng.integers(0, 16, (5, 3, 7, 6)).astype(np.uint16)
    batched = im2col(imgs, g)
    assert batched.shape == (5, g.M, g.K)
    for s in range(5):
        np.testing.assert_array_equal(batched[s], im2col(imgs[s], g))


@pytest.mark.parametrize("bias, value", [
    (np.array([-2**63] + [0] * 15, np.int64), "-9223372036854775808"),
    (np.array([2**63] + [0] * 15, np.uint64), "9223372036854775808"),
    (np.array([-2**31 - 1] + [0] * 15, np.int64), "-2147483649"),
    (np.array([2**31] + [0] * 15, np.int64), "2147483648"),
])
def test_bias_outside_int32_is_refused_with_its_value_as_it_is(workload, bias, value):
    path = workload / "conv2.npz"
    _rewrite(path, bias=bias)
    with pytest.raises(TraceError) as ei:
        load_workload(workload).layer("conv2")
    assert ei.value.field == "bias" and f"value {value} outside the int32 range" in str(ei.value)


def test_bias_at_the_int32_bounds_is_accepted_and_never_wraps(tmp_path):
    from loas.commands.trace import golden_layer

    rng = np.random.default_rng(2)
    g = Geometry(4, 3, 3, 3, 1, 1, 2)
    kw = random_layer(rng, g, 4)
    kw["bias"] = np.array([-2**31, 2**31 - 1])
    res = run_layer(im2col(kw["spike_words"][0], g), kw["weight"].reshape(2, -1).T, kw["bias"], kw["lif"], 4)
    kw["expected_out_words"] = res.out_words[None]
    layer = Layer(write_layer(tmp_path / "l.npz", **kw), T=4)
    assert layer.bias.tolist() == [-2**31, 2**31 - 1]
    out = golden_layer(layer).out_words
    assert (out[:, 0] == 0).all() and (out[:, 1] == 0b1111).all()  # never fires / always fires


def test_cli_refuses_an_int64_min_bias_in_one_line(workload):
    from conftest import loas

    _rewrite(workload / "conv2.npz", bias=np.array([-2**63] + [0] * 15, np.int64))
    for cmd in (("trace", "stats"), ("trace", "verify"), ("sim",)):
        r = loas(*cmd, workload)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (cmd, r.stderr)
        assert "field 'bias': value -9223372036854775808 outside the int32 range" in r.stderr
