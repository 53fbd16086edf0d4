"""Compact checkpoints: one loader for the zoo and SNASNet through the architecture registry."""

import hashlib
from pathlib import Path

import pytest
import torch

from loas.commands.nas import load_snasnet, save_snasnet
from models.checkpoint import ARCHITECTURES, FORMAT, build_from_meta, load_model, model_meta, save_model
from models.snasnet import build_snasnet
from models.zoo import ZOO, default_net
from sim.errors import UserError

CKPT = Path(__file__).resolve().parent.parent / "models" / "checkpoints" / "default.pt"


def state_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.contiguous().numpy().tobytes())
    return h.hexdigest()


def same_state(a, b) -> bool:
    """Equal tensors under equal names (a pruned -0.0 weight comes back as 0.0: equal, not same bytes)."""
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def pruned(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_((torch.rand(p.shape, generator=g) > 0.7).float())
    return model.eval()


def test_registry_holds_the_zoo_and_snasnet():
    assert set(ARCHITECTURES) == set(ZOO) | {"snasnet"}
    assert build_from_meta(model_meta("resnet19", dataset="cifar10", width=2, variant="ours")).fc1.op.in_features == 16
    with pytest.raises(UserError, match="unknown architecture 'lenet'"):
        build_from_meta({"arch": "lenet", "kwargs": {}})


@pytest.mark.skipif(not CKPT.is_file(), reason="shipped checkpoint not present")
def test_shipped_checkpoint_loads_exactly_as_before():
    # digest of the state dict the loader before the registry produced (commit 67712bb)
    model, ck = load_model(CKPT)
    assert ck["meta"] == {"arch": "default", "kwargs": {"T": 4, "n_mask": 0, "width": 16},
                          "dataset": "fashion-mnist"}
    assert state_digest(model) == "e25790407b5e5bce9becf6a2e19edc9cde6fcd34c9a2e2cb40da449bc5d8018c"


def test_snasnet_and_zoo_round_trip_through_one_loader(tmp_path):
    torch.manual_seed(0)
    net = pruned(build_snasnet("0302 0030 3003 0000", "fashion-mnist", channels=2, T=2))
    save_snasnet(net, "fashion-mnist", tmp_path / "s.pt", record={"test_acc": 0.25})
    loaded, ck = load_snasnet(tmp_path / "s.pt")
    assert str(loaded.matrix) == str(net.matrix) and ck["record"]["test_acc"] == 0.25
    assert same_state(loaded, net)
    same, _ = load_model(tmp_path / "s.pt", archs=("snasnet",))
    assert same_state(same, net)
    zoo = pruned(default_net(width=2), 1)
    save_model(zoo, model_meta("default", dataset="fashion-mnist", width=2), tmp_path / "z.pt")
    assert same_state(load_model(tmp_path / "z.pt")[0], zoo)
    # each command family refuses the other's checkpoints, naming the field and where to go
    with pytest.raises(UserError, match=r"s.pt: field 'meta.arch': 'snasnet' is not default or .*loas nas"):
        load_model(tmp_path / "s.pt")
    with pytest.raises(UserError, match=r"z.pt: field 'meta.arch': 'default' is not snasnet .*loas train/export"):
        load_snasnet(tmp_path / "z.pt")


def test_corrupt_checkpoints_name_file_and_field(tmp_path):
    zoo = pruned(default_net(width=2))
    save_model(zoo, model_meta("default", dataset="fashion-mnist", width=2), tmp_path / "z.pt")
    ck = torch.load(tmp_path / "z.pt", weights_only=True)
    name = next(iter(ck["sparse"]))
    ck["sparse"][name]["values"] = ck["sparse"][name]["values"][1:]
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(UserError, match=rf"bad.pt: field 'sparse.{name}': mask and values disagree"):
        load_model(tmp_path / "bad.pt")
    ck = torch.load(tmp_path / "z.pt", weights_only=True)
    ck["meta"]["kwargs"]["T"] = 0
    torch.save(ck, tmp_path / "t0.pt")
    with pytest.raises(UserError, match=r"t0.pt: field 'meta.kwargs': .*T must be a positive int, got 0"):
        load_model(tmp_path / "t0.pt")
    ck["meta"]["kwargs"]["T"] = 4
    ck["meta"]["kwargs"]["width"] = 3
    torch.save(ck, tmp_path / "w3.pt")
    with pytest.raises(UserError, match=r"w3.pt: field 'state': does not fit default"):
        load_model(tmp_path / "w3.pt")
    torch.save({"format": "other"}, tmp_path / "o.pt")
    with pytest.raises(UserError, match="o.pt: field 'format': not a loas model checkpoint"):
        load_snasnet(tmp_path / "o.pt")
    assert FORMAT == "loas-snn/1"
