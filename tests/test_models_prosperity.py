"""The Prosperity spike-data importer and its restricted unpickler."""

import collections
import io
import os
import pickle

import numpy as np
import pytest
import torch

from models.prosperity import ProsperityFormatError, import_prosperity, read_prosperity
from sim.golden import run_layer
from sim.trace import Layer, load_workload




def write_file(path, T=4, chans=(3, 4, 6, 6), sizes=(8, 8, 4, 4), features=6, seed=0):
    """A small file in the published format: conv inputs [T, C, H, W] bool plus one Linear input."""
    g = torch.Generator().manual_seed(seed)
    d = collections.defaultdict(list)
    d["Conv2d"].append(torch.rand(1, 3, 8, 8, generator=g) > 0.5)
    for c, s in zip(chans[1:], sizes[1:]):
        d["Conv2d"].append(torch.rand(T, c, s, s, generator=g) > 0.7)
    d["Linear"].append(torch.rand(T, features, generator=g) > 0.7)
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def test_generated_file_uses_the_published_globals(tmp_path):
    import pickletools

    write_file(tmp_path / "s.pkl")
    names = [arg for op, arg, _ in pickletools.genops((tmp_path / "s.pkl").read_bytes())
             if op.name == "SHORT_BINUNICODE"]
    assert "_rebuild_tensor_v2" in names and "_load_from_bytes" in names


def test_import_writes_a_verified_workload(tmp_path):
    d = write_file(tmp_path / "s.pkl")
    rep = import_prosperity(tmp_path / "s.pkl", tmp_path / "w", name="tiny", weight_sparsity=0.9,
                            seed=3)
    wl = load_workload(tmp_path / "w")
    assert wl.T == 4
    names = [r["name"] for r in rep["layers"]]
    assert names == ["conv2", "conv3", "conv4"]
    total = zeros = 0
    for i, n in enumerate(names, start=1):
        layer = Layer(tmp_path / "w" / f"{n}.npz", T=4)
        g = layer.geometry
        assert (g.c_in, g.h) == (d["Conv2d"][i].shape[1], d["Conv2d"][i].shape[2])
        spikes = torch.stack([torch.from_numpy(((layer.spike_words[0] >> t) & 1).astype(bool))
                              for t in range(4)])
        assert torch.equal(spikes, d["Conv2d"][i])
        res = run_layer(layer.words(0), layer.weights_kn(), layer.bias, layer.lif, 4)
        assert np.array_equal(res.out_words, layer.expected(0))
        total += layer.weight.size
        zeros += int((layer.weight == 0).sum())
    assert Layer(tmp_path / "w" / "conv4.npz").geometry.c_out == 6  # last conv -> Linear features
    assert zeros / total >= 0.9
    again = import_prosperity(tmp_path / "s.pkl", tmp_path / "w2", name="tiny", weight_sparsity=0.9,
                              seed=3)
    assert again["layers"] == rep["layers"]


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_crafted_pickle_does_not_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"Conv2d": [Evil()]}, f)
    with pytest.raises(ProsperityFormatError, match="posix.system|os.system|not allowed"):
        read_prosperity(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()


class EvilStorage:
    """A storage payload whose embedded pickle names os.system."""

    def __reduce__(self):
        import torch.storage

        return (torch.storage._load_from_bytes, (pickle.dumps(Evil()),))


def test_crafted_storage_payload_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil2.pkl", "wb") as f:
        pickle.dump({"Conv2d": [EvilStorage()]}, f)
    with pytest.raises(ProsperityFormatError, match="refused or unreadable"):
        read_prosperity(tmp_path / "evil2.pkl")
    assert not (tmp_path / "pwned").exists()


def test_malformed_files(tmp_path):
    with pytest.raises(ProsperityFormatError, match="not found"):
        read_prosperity(tmp_path / "none.pkl")
    with open(tmp_path / "a.pkl", "wb") as f:
        pickle.dump({"Linear": []}, f)
    with pytest.raises(ProsperityFormatError, match="field 'Conv2d'"):
        read_prosperity(tmp_path / "a.pkl")
    with open(tmp_path / "b.pkl", "wb") as f:
        pickle.dump({"Conv2d": [torch.zeros(1, 3, 4, 4, dtype=torch.bool),
                                torch.zeros(4, 3, 4, 4)]}, f)
    with pytest.raises(ProsperityFormatError, match=r"Conv2d\[1\].*bool"):
        read_prosperity(tmp_path / "b.pkl")
    (tmp_path / "c.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ProsperityFormatError, match="field 'pickle'"):
        read_prosperity(tmp_path / "c.pkl")


def test_real_file(shared_data, tmp_path):
    path = shared_data / "prosperity-loas" / "vgg16_cifar10_loas.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    d = read_prosperity(path)
    assert len(d["Conv2d"]) == 13 and tuple(d["Conv2d"][1].shape) == (4, 64, 32, 32)
    spikes = sum(int(t.sum()) for t in d["Conv2d"][1:]) + int(d["Linear"][0].sum())
    bits = sum(t.numel() for t in d["Conv2d"][1:]) + d["Linear"][0].numel()
    assert 0.75 < 1 - spikes / bits < 0.85


def test_real_file_is_the_zoo_vgg16(shared_data):
    """The published spikes have exactly the spike GEMM layers of the zoo's LoAS VGG16."""
    from models.prosperity import zoo_network
    from sim.trace import Geometry

    path = shared_data / "prosperity-loas" / "vgg16_cifar10_loas.pkl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    d = read_prosperity(path)
    convs = d["Conv2d"][1:]
    outs = [int(t.shape[1]) for t in convs[1:]] + [int(d["Linear"][0].shape[1])]
    geoms = [Geometry(c_in=int(t.shape[1]), h=int(t.shape[2]), w=int(t.shape[3]), kernel=3, stride=1,
                      padding=1, c_out=c) for t, c in zip(convs, outs)]
    assert zoo_network(geoms) == {"model": "vgg16", "variant": "loas"}
    assert zoo_network(geoms[:-1]) is None
