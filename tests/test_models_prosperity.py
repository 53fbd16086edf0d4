"""The Prosperity spike-data importer and its restricted unpickler."""

import collections
import io
import os
import pickle

import numpy as np
import pytest
import torch

from models.prosperity import (ProsperityFormatError, classifier_features, detect_arch, import_prosperity,
                               loas_table, match_table, read_prosperity)
from sim.golden import run_layer
from sim.trace import Layer, load_workload




def arch_file(path, arch, T=4, rate=0.05, seed=0, edit=None):
    """A file in the published format for LoAS network ``arch``, from the zoo's LoAS shapes:
    the encoding conv's image, every layer's input spikes [T, C, H, W] bool, the classifier input."""
    g = torch.Generator().manual_seed(seed)
    d = collections.defaultdict(list)
    d["Conv2d"].append(torch.rand(1, 3, 32, 32, generator=g) > 0.5)
    for tl in loas_table(arch):
        x = tl.geometry
        d["Conv2d"].append(torch.rand(T, x.c_in, x.h, x.w, generator=g) < rate)
    d["Linear"].append(torch.rand(T, classifier_features(arch), generator=g) < rate)
    if edit:
        edit(d)
    with open(path, "wb") as f:
        pickle.dump(d, f)
    return d


def write_file(path, **kw):
    return arch_file(path, "alexnet", **kw)


def test_generated_file_uses_the_published_globals(tmp_path):
    import pickletools

    write_file(tmp_path / "s.pkl")
    names = [arg for op, arg, _ in pickletools.genops((tmp_path / "s.pkl").read_bytes())
             if op.name == "SHORT_BINUNICODE"]
    assert "_rebuild_tensor_v2" in names and "_load_from_bytes" in names


def test_import_writes_a_verified_workload(tmp_path):
    d = write_file(tmp_path / "s.pkl")
    rep = import_prosperity(tmp_path / "s.pkl", tmp_path / "w", name="tiny", arch="auto", weight_sparsity=0.9,
                            seed=3)
    wl = load_workload(tmp_path / "w")
    assert wl.T == 4 and rep["arch"] == "alexnet" and wl.provenance["arch"] == "alexnet"
    assert wl.provenance["weights"].startswith("synthetic") and wl.provenance["weight_sparsity"] == 0.9
    names = [r["name"] for r in rep["layers"]]
    assert names == ["conv2", "conv3", "conv4", "conv5"]
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
    # LoAS's AlexNet: conv3-5 at 8x8 (M = 64), conv5 -> 256 channels (not the classifier's 1024)
    assert [r["M"] for r in rep["layers"]] == [64, 64, 64, 64] and rep["layers"][-1]["N"] == 256
    assert zeros / total == pytest.approx(0.9, abs=1e-3)
    again = import_prosperity(tmp_path / "s.pkl", tmp_path / "w2", name="tiny", arch="alexnet",
                              weight_sparsity=0.9, seed=3)
    assert again["layers"] == rep["layers"]


def test_resnet19_file_yields_loas_shapes(tmp_path):
    arch_file(tmp_path / "r.pkl", "resnet19", rate=0.02)
    rep = import_prosperity(tmp_path / "r.pkl", tmp_path / "w", name="r19", arch="resnet19", weight_sparsity=0.99)
    got = [(r["name"], r["M"], r["K"], r["N"], r["kernel"], r["stride"]) for r in rep["layers"]]
    assert len(got) == 19
    assert got[:3] == [("blocks_0_conv1", 256, 576, 128, 3, 2), ("blocks_0_conv2", 256, 1152, 128, 3, 1),
                       ("blocks_0_shortcut", 256, 64, 128, 1, 2)]
    assert [n for n, *_ in got if n.endswith("shortcut")] == ["blocks_0_shortcut", "blocks_3_shortcut",
                                                             "blocks_6_shortcut"]
    assert sum(m * k * n for _, m, k, n, *_ in got) == 553648128
    wl = load_workload(tmp_path / "w")
    assert wl.provenance["arch"] == "resnet19" and len(wl.layer_names) == 19


@pytest.mark.parametrize("arch", ["vgg16", "alexnet", "resnet19"])
def test_tables_match_their_own_files_only(tmp_path, arch):
    arch_file(tmp_path / "f.pkl", arch, rate=0.0)
    d = read_prosperity(tmp_path / "f.pkl")
    assert detect_arch(tmp_path / "f.pkl", d) == arch
    for other in {"vgg16", "alexnet", "resnet19"} - {arch}:
        with pytest.raises(ProsperityFormatError, match=f"LoAS {other}"):
            match_table(tmp_path / "f.pkl", d, other)


def test_entry_mismatch_names_the_entry(tmp_path):
    def shrink(d):
        d["Conv2d"][3] = d["Conv2d"][3][:, :, :4, :4]

    arch_file(tmp_path / "f.pkl", "alexnet", edit=shrink)
    with pytest.raises(ProsperityFormatError, match=r"field 'Conv2d\[3\]'.*layer conv4 reads \[4, 384, 8, 8\]"):
        import_prosperity(tmp_path / "f.pkl", tmp_path / "w", name="x", arch="alexnet")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["Conv2d"].__setitem__(1, torch.zeros(0, 64, 8, 8, dtype=torch.bool)), "T = 0"),
    (lambda d: d["Conv2d"].__setitem__(1, torch.zeros(17, 64, 8, 8, dtype=torch.bool)), "T = 17"),
    (lambda d: d["Conv2d"].__setitem__(1, torch.zeros(40, 64, 8, 8, dtype=torch.bool)), "T = 40"),
    (lambda d: d["Conv2d"].__setitem__(2, torch.zeros(4, 192, 0, 8, dtype=torch.bool)), "H = 0"),
    (lambda d: d["Conv2d"].__setitem__(2, torch.zeros(4, 0, 8, 8, dtype=torch.bool)), "C_in = 0"),
    (lambda d: d["Linear"].__setitem__(0, torch.zeros(4, 0, dtype=torch.bool)), "F = 0"),
    (lambda d: d["Conv2d"].__setitem__(1, torch.full((4, 64, 8, 8), 2.0)), "spike value 2.0"),
])
def test_importer_checks_are_one_line_exit_2(tmp_path, edit, needle):
    from conftest import loas

    arch_file(tmp_path / "f.pkl", "alexnet", edit=edit)
    r = loas("trace", "import-prosperity", tmp_path / "f.pkl", "--name", "x", "--out", tmp_path / "w")
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_float_spikes_of_0_and_1_are_accepted(tmp_path):
    arch_file(tmp_path / "f.pkl", "alexnet", edit=lambda d: d["Conv2d"].__setitem__(1, d["Conv2d"][1].float()))
    assert read_prosperity(tmp_path / "f.pkl")["Conv2d"][1].dtype == torch.bool


def test_per_layer_sparsity_file(tmp_path):
    write_file(tmp_path / "s.pkl")
    y = tmp_path / "sp.yaml"
    y.write_text("conv2: 0.5\nconv3: 0.9\nconv4: 0.95\nconv5: 0.99\n")
    rep = import_prosperity(tmp_path / "s.pkl", tmp_path / "w", name="t", arch="alexnet", weight_sparsity=str(y))
    assert [round(r["weight_sparsity"], 2) for r in rep["layers"]] == [0.5, 0.9, 0.95, 0.99]
    assert load_workload(tmp_path / "w").provenance["weight_sparsity"]["conv3"] == 0.9
    from sim.errors import UserError

    y.write_text("conv2: 0.5\nconv3: 0.9\nconv4: 0.95\n")
    with pytest.raises(UserError, match="key 'conv5': missing"):
        import_prosperity(tmp_path / "s.pkl", tmp_path / "w3", name="t", arch="alexnet", weight_sparsity=str(y))
    y.write_text("conv2: 0.5\nconv9: 0.9\n")
    with pytest.raises(UserError, match="key 'conv9': no such layer"):
        import_prosperity(tmp_path / "s.pkl", tmp_path / "w3", name="t", arch="alexnet", weight_sparsity=str(y))
    with pytest.raises(UserError, match="must be in"):
        import_prosperity(tmp_path / "s.pkl", tmp_path / "w3", name="t", arch="alexnet", weight_sparsity="1.5")


def test_checkpoint_weights(tmp_path):
    from models.checkpoint import model_meta, save_model
    from models.prosperity import _loas_model

    model = _loas_model("alexnet")
    save_model(model, model_meta("alexnet", dataset="cifar10"), tmp_path / "a.pt")
    write_file(tmp_path / "s.pkl")
    rep = import_prosperity(tmp_path / "s.pkl", tmp_path / "w", name="t", arch="alexnet",
                            checkpoint=tmp_path / "a.pt")
    wl = load_workload(tmp_path / "w")
    assert wl.provenance["weights"] == "checkpoint" and len(wl.provenance["checkpoint_sha256"]) == 64
    q = model.stages["conv3"].quantize()
    assert np.array_equal(wl.layer("conv3").weight, q.weight.numpy())
    # an unpruned network: only weights below half an int8 step are 0 (N(0, 0.1) init, max ~5 sigma: ~2 %)
    assert rep["layers"][1]["weight_sparsity"] < 0.03
    from sim.errors import UserError

    from models.zoo import default_net

    save_model(default_net(), model_meta("default", dataset="fashion-mnist"), tmp_path / "d.pt")
    with pytest.raises(UserError, match="meta.arch"):
        import_prosperity(tmp_path / "s.pkl", tmp_path / "w2", name="t", arch="alexnet", checkpoint=tmp_path / "d.pt")


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
                                torch.zeros(4, 3, 4)]}, f)
    with pytest.raises(ProsperityFormatError, match=r"Conv2d\[1\].*\[T, C_in, H, W\]"):
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
    assert detect_arch(path, d) == "vgg16"
