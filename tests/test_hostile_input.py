"""Hostile and careless input, one regression test per kind: every case is exit 2 with one line on
stderr naming the file and field, found before anything big is allocated (in process: loas.cli.main)."""

from __future__ import annotations

import collections
import gzip
import io
import pickle
import shutil
import time
import zipfile

import numpy as np
import pytest
import torch

from loas.cli import main
from sim.synthetic import write_random_workload
from sim.trace import Geometry


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_random_workload(tmp_path_factory.mktemp("h") / "good",
                                 {"conv2": Geometry(4, 4, 4, 3, 1, 1, 8), "fc": Geometry.fc(16, 4)}, T=4, seed=2)


@pytest.fixture
def wl(good, tmp_path):
    d = tmp_path / "wl"
    shutil.copytree(good, d)
    return d


def run(capsys, *argv):
    t0 = time.perf_counter()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert time.perf_counter() - t0 < 30, argv
    return rc, out, err


def refused(capsys, *argv, words=()):
    rc, out, err = run(capsys, *argv)
    assert rc == 2, (argv, rc, err)
    assert err.startswith("loas: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)
    return err


def _members(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _write_npz(path, members, raw: dict | None = None):
    """An npz of `members`, plus `raw` members given as (npy header dict, data bytes)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in members.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(v))
            zf.writestr(k + ".npy", buf.getvalue())
        for k, (head, data) in (raw or {}).items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, head)
            zf.writestr(k + ".npy", buf.getvalue() + data)


# allocation bombs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd", [["trace", "stats"], ["golden", "--layer", "conv2"], ["trace", "verify"],
                                 ["sim", "--layer", "conv2"]])
def test_geometry_implying_terabytes_is_refused_before_allocation(wl, capsys, cmd):
    m = _members(wl / "conv2.npz")
    m["geometry"] = np.array([1, 1, 1, 1, 1, 500_000, 8], np.int64)  # padding: a 10^6 x 10^6 image
    _write_npz(wl / "conv2.npz", m)
    refused(capsys, *cmd, wl, words=("conv2.npz: field 'geometry'", "bytes per sample"))


def test_declared_member_shape_bomb_is_refused_before_reading(wl, capsys):
    m = _members(wl / "conv2.npz")
    sw = m.pop("spike_words")
    head = {"descr": "<u2", "fortran_order": False, "shape": (10**9,) + sw.shape[1:]}
    _write_npz(wl / "conv2.npz", m, raw={"spike_words": (head, sw.tobytes())})
    refused(capsys, "trace", "stats", wl, words=("field 'spike_words'", "declares"))
    head["shape"] = (2,) + sw.shape[1:]  # fits the bound: read, and found truncated
    _write_npz(wl / "conv2.npz", m, raw={"spike_words": (head, sw.tobytes()[:10])})
    refused(capsys, "trace", "stats", wl, words=("field 'npz'",))


@pytest.mark.parametrize("text, key", [("pes: 1000000000\n", "pes"), ("chunk_bits: 1099511627776\n", "chunk_bits"),
                                       ("buffer: {capacity_kb: 1000000000000}\n", "buffer.capacity_kb"),
                                       ("tile: {m: 10000000000}\n", "tile.m")])
def test_huge_hardware_sizes_in_config_are_refused(wl, tmp_path, capsys, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    refused(capsys, "sim", wl, "--config", cfg, words=(str(cfg), f"key '{key}'", "<= "))


def test_huge_hardware_sizes_in_sweep_param_are_refused(capsys):
    refused(capsys, "sweep", "--param", "pes=1000000000", "--layer", "fc1", words=("key 'pes'",))
    refused(capsys, "sweep", "--param", "chunk_bits=1048576", "--layer", "fc1", words=("key 'chunk_bits'",))


def test_manifest_with_huge_T_list_or_thousands_of_layers(wl, capsys):
    man = (wl / "manifest.yaml").read_text()
    (wl / "manifest.yaml").write_text(man.replace("T: 4", "T: [" + ", ".join(["4"] * 20_000) + "]"))
    err = refused(capsys, "trace", "stats", wl, words=("field 'T'", "wrong type list"))
    assert len(err) < 500
    layers = "".join(f"- {{name: l{i}, file: conv2.npz, kind: conv}}\n" for i in range(1_100))
    (wl / "manifest.yaml").write_text(man.split("layers:")[0] + "layers:\n" + layers)
    refused(capsys, "trace", "stats", wl, words=("field 'layers'", "more than the 1024"))


def test_sweep_grid_is_capped(capsys):
    pes = ",".join(str(p) for p in range(1, 101))
    refused(capsys, "sweep", "--param", f"pes={pes}", "--param", "timesteps=1,2,4,8,16",
            words=("500 points", "--max-points 256"))


YAML_BOMB = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


def test_yaml_alias_bomb_is_refused(wl, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + YAML_BOMB + "pes: *i\n")
    refused(capsys, "sim", wl, "--config", cfg, words=(str(cfg), "alias expansion"))
    man = (wl / "manifest.yaml").read_text()
    (wl / "manifest.yaml").write_text("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\n" + YAML_BOMB +
                                      man.replace("provenance:", "provenance: {x: *i}\nprovenancex:"))
    refused(capsys, "trace", "stats", wl, words=("manifest.yaml", "alias expansion"))
    cfg.write_text("&a [*a]\n")
    refused(capsys, "sim", wl, "--config", cfg, words=("recursive",))


# damaged files -----------------------------------------------------------------------------------
def test_corrupted_npz_member_data_is_one_line(wl, capsys):
    raw = bytearray((wl / "conv2.npz").read_bytes())
    with zipfile.ZipFile(wl / "conv2.npz") as zf:
        info = zf.getinfo("spike_words.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    seen = set()
    for off in range(start + 8, start + info.compress_size - 2, max(1, info.compress_size // 12)):
        bad = bytearray(raw)
        bad[off] ^= 0x5A
        (wl / "conv2.npz").write_bytes(bytes(bad))
        rc, out, err = run(capsys, "trace", "stats", wl)
        assert rc in (0, 2) and "Traceback" not in err
        if rc == 2:
            assert err.count("\n") == 1 and "conv2.npz: field 'npz'" in err
            seen.add(err.split("(")[1].split(":")[0])
    assert seen  # a flip in the deflate stream is refused (zlib.error or the CRC check)


def test_non_utf8_manifest_and_config(wl, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(b"pes: 16\n# \xff\xfe caf\xe9\n")
    refused(capsys, "sim", wl, "--config", cfg, words=(str(cfg), "not UTF-8"))
    (wl / "manifest.yaml").write_bytes((wl / "manifest.yaml").read_bytes() + b"# \xe9\n")
    refused(capsys, "trace", "stats", wl, words=("manifest.yaml", "not UTF-8"))


@pytest.mark.parametrize("text, key", [("clock_mhz: .inf\n", "clock_mhz"), ("clock_mhz: .nan\n", "clock_mhz"),
                                       ("clock_mhz: -.inf\n", "clock_mhz"), ("clock_mhz: 0\n", "clock_mhz"),
                                       ("clock_mhz: " + "9" * 400 + "\n", "clock_mhz")])
def test_nan_inf_zero_in_config_numbers(wl, tmp_path, capsys, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    refused(capsys, "sim", wl, "--config", cfg, words=(str(cfg), f"key '{key}'", "finite"))


@pytest.mark.parametrize("text, key", [("sram_nj_per_access: .nan\n", "sram_nj_per_access"),
                                       ("designs: {loas: {op_pj: .inf}}\n", "designs.loas.op_pj")])
def test_nan_inf_energy_constants(wl, tmp_path, capsys, text, key):
    e = tmp_path / "e.yaml"
    e.write_text(text)
    refused(capsys, "sim", wl, "--energy", e, words=(str(e), f"key '{key}'", "finite"))


def test_mixed_type_keys_in_config(wl, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pes: 16\n1: 2\nnull: 3\n")
    refused(capsys, "sim", wl, "--config", cfg, words=(str(cfg), "key of type int"))
    cfg.write_text("tile: {m: 4, 7: 1}\n")
    refused(capsys, "sim", wl, "--config", cfg, words=("key 'tile.7'",))


def test_mixed_type_keys_and_stride0_tensor_in_pickle(tmp_path, capsys):
    p = tmp_path / "s.pkl"
    with open(p, "wb") as f:
        pickle.dump({1: [], "Linear": []}, f)
    refused(capsys, "trace", "import-prosperity", p, "--name", "x", "--out", tmp_path / "o",
            words=("field 'Conv2d': missing",))
    d = collections.defaultdict(list)
    d["Conv2d"] = [torch.zeros(1, 3, 4, 4, dtype=torch.bool),
                   torch.zeros(1, dtype=torch.bool).as_strided((4, 10**6, 10**6, 10**3), (0, 0, 0, 0))]
    with open(p, "wb") as f:
        pickle.dump(d, f)
    refused(capsys, "trace", "import-prosperity", p, "--name", "x", "--out", tmp_path / "o",
            words=("field 'pickle'", "refused"))
    assert not (tmp_path / "o").exists()


# models: checkpoints, datasets, pruning runs ----------------------------------------------------
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from models.checkpoint import model_meta, save_model
    from models.zoo import build

    meta = model_meta("default", dataset="fashion-mnist", width=2)
    path = tmp_path_factory.mktemp("ck") / "m.pt"
    save_model(build("default", **meta["kwargs"]), meta, path)
    return path


@pytest.mark.parametrize("cmd", [["profile"], ["finetune", "--out", "OUT"], ["export", "--out", "OUT"]])
@pytest.mark.parametrize("damage", ["no meta", "meta not a dict", "no dense", "sparse shape bomb"])
def test_checkpoint_without_meta_or_parts(ckpt, tmp_path, capsys, cmd, damage):
    ck = torch.load(ckpt, weights_only=True)
    field = {"no meta": "meta", "meta not a dict": "meta", "no dense": "dense", "sparse shape bomb": "sparse."}[damage]
    if damage == "no meta":
        del ck["meta"]
    elif damage == "meta not a dict":
        ck["meta"] = [1, 2]
    elif damage == "no dense":
        del ck["dense"]
    else:
        name = next(iter(ck["sparse"]))
        ck["sparse"][name]["shape"] = [10**6, 10**6, 10**3]
    bad = tmp_path / "bad.pt"
    torch.save(ck, bad)
    argv = [a.replace("OUT", str(tmp_path / "o")) for a in cmd]
    refused(capsys, *argv, bad, words=(f"bad.pt: field '{field}",))


def _fmnist(root, size=28, n=4):
    from test_models_data import write_idx

    root.mkdir(exist_ok=True)
    for split, (img, lbl) in {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}.items():
        write_idx(root / img, np.zeros((n, size, size)))
        write_idx(root / lbl, np.arange(n) % 10)
    return root


def test_truncated_and_corrupted_fashion_mnist(ckpt, tmp_path, capsys):
    root = _fmnist(tmp_path / "fm")
    f = root / "t10k-images-idx3-ubyte.gz"
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    refused(capsys, "profile", ckpt, "--data", root, words=("t10k-images-idx3-ubyte.gz", "cannot read"))
    bad = bytearray(raw)
    bad[len(raw) // 2] ^= 0xFF
    bad[len(raw) // 2 + 1] ^= 0xFF
    f.write_bytes(bytes(bad))
    refused(capsys, "profile", ckpt, "--data", root, words=("t10k-images-idx3-ubyte.gz",))
    f.write_bytes(gzip.compress(b"\0\0\x08\x03" + (10**6).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
                                + bytes(300 * 2**20)))
    refused(capsys, "profile", ckpt, "--data", root, words=("more than",))


def test_images_too_small_and_width_0(ckpt, tmp_path, capsys):
    root = _fmnist(tmp_path / "fm", size=8)
    refused(capsys, "profile", ckpt, "--data", root, words=("8 x 8", "28 x 28"))
    refused(capsys, "train", "--data", root, "--width", "0", "--out", tmp_path / "m.pt", words=("--width",))


def test_corrupted_lth_json_and_rewind_checkpoint(tmp_path):
    from models.prune import PruneConfig, round_path, run_lth
    from models.train import TrainConfig
    from models.zoo import default_net
    from sim.errors import UserError
    from test_models_prune import tiny_data

    data = tiny_data(16)
    t = TrainConfig(epochs=1, batch_size=16)
    cfg = PruneConfig(rounds=1, rate=0.5, rewind_epoch=1, dense=t, retrain=t)
    quiet = dict(progress=False, log=lambda s: None)
    run_lth(lambda: default_net(width=2), data, data, cfg, tmp_path, **quiet)
    log = tmp_path / "lth.json"
    good_log = log.read_text()
    log.write_text(good_log[: len(good_log) // 2])
    with pytest.raises(UserError, match="lth.json: field 'json'"):
        run_lth(lambda: default_net(width=2), data, data, cfg, tmp_path, **quiet)
    log.write_text("[1, 2]")
    with pytest.raises(UserError, match="lth.json: field 'rounds'"):
        run_lth(lambda: default_net(width=2), data, data, cfg, tmp_path, **quiet)
    log.write_text(good_log)
    # a damaged rewind point that torch still loads: one weight changed in place
    rw = tmp_path / "rewind.pt"
    ck = torch.load(rw, weights_only=True)
    name = next(k for k in ck["model"] if k.endswith("weight"))
    ck["model"][name].view(-1)[0] += 1.0
    torch.save(ck, rw)
    round_path(tmp_path, 1).unlink()
    with pytest.raises(UserError, match="rewind.pt: field 'sha256'"):
        run_lth(lambda: default_net(width=2), data, data, cfg, tmp_path, **quiet)
