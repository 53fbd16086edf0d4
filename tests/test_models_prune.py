"""Lottery-ticket pruning: sparsity per round, masks kept through training, resume after a kill."""

import json

import pytest
import torch

from models.data import Dataset
from models.layers import prunable
from models.prune import PruneConfig, full_masks, magnitude_masks, mask_sparsity, round_path, run_lth
from models.train import TrainConfig, load_checkpoint, train
from models.zoo import default_net




def tiny_data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Dataset(imgs, labels, "fashion-mnist", 10)


def tiny_net():
    return default_net(width=2)


@pytest.mark.parametrize("scope", ["global", "local"])
def test_sparsity_after_k_rounds(scope):
    torch.manual_seed(0)
    m = tiny_net()
    masks = full_masks(m)
    for k in range(1, 6):
        # new random magnitudes each round, as after retraining
        for _, p in prunable(m):
            p.data.normal_()
        masks = magnitude_masks(m, masks, 0.25, scope)
        assert mask_sparsity(masks) == pytest.approx(1 - 0.75 ** k, abs=2e-3)
    if scope == "local":
        for name, mk in masks.items():
            assert 1 - mk.float().mean() == pytest.approx(1 - 0.75 ** 5, abs=0.05), name


def test_pruned_never_revive():
    torch.manual_seed(0)
    m = tiny_net()
    masks = magnitude_masks(m, full_masks(m), 0.5)
    for _, p in prunable(m):
        p.data.normal_()  # a pruned weight grows large: it must stay pruned
    again = magnitude_masks(m, masks, 0.5)
    for n in masks:
        assert not (again[n] & ~masks[n]).any()


def test_masks_kept_through_training(tmp_path):
    torch.manual_seed(0)
    m = tiny_net()
    masks = magnitude_masks(m, full_masks(m), 0.75)
    cfg = TrainConfig(epochs=2, lr=0.5, batch_size=16, weight_decay=5e-4)
    train(m, tiny_data(), cfg, tmp_path / "state.pt", masks=masks, progress=False, log=lambda s: None)
    for name, p in prunable(m):
        assert (p[~masks[name]] == 0).all(), name
        assert (p[masks[name]] != 0).all(), name


def lth_config():
    t = TrainConfig(epochs=2, lr=0.2, batch_size=16, seed=1)
    return PruneConfig(rounds=3, rate=0.5, rewind_epoch=1, dense=t,
                       retrain=TrainConfig(epochs=2, lr=0.2, batch_size=16, seed=1))


class Killed(Exception):
    pass


def test_resume_after_interruption_loses_nothing(tmp_path):
    data = tiny_data()
    quiet = dict(progress=False, log=lambda s: None)
    ref = run_lth(tiny_net, data, data, lth_config(), tmp_path / "ref", **quiet)
    assert [r["round"] for r in ref] == [0, 1, 2, 3]
    assert ref[-1]["mask_sparsity"] == pytest.approx(1 - 0.5 ** 3, abs=1e-3)

    seen = []

    def killer(msg):
        seen.append(msg)
        if msg.startswith("epoch 2/2") and sum(s.startswith("round 2/") for s in seen):
            raise Killed  # killed in the middle of round 2, after one epoch's checkpoint

    with pytest.raises(Killed):
        run_lth(tiny_net, data, data, lth_config(), tmp_path / "run", progress=False, log=killer)
    assert round_path(tmp_path / "run", 1).is_file() and not round_path(tmp_path / "run", 2).is_file()
    assert (tmp_path / "run" / "train_state.pt").is_file()
    logs = []
    resumed = run_lth(tiny_net, data, data, lth_config(), tmp_path / "run", progress=False,
                      log=logs.append)
    assert any(s.startswith("resuming") for s in logs)
    assert not any(s.startswith("round 0/") or s.startswith("round 1/") for s in logs)
    assert [r["round"] for r in resumed] == [0, 1, 2, 3]
    for r in range(4):
        a = load_checkpoint(round_path(tmp_path / "ref", r))
        b = load_checkpoint(round_path(tmp_path / "run", r))
        for n in a["masks"]:
            assert torch.equal(a["masks"][n], b["masks"][n])
        for n in a["model"]:
            assert torch.equal(a["model"][n], b["model"][n]), (r, n)
    log = json.loads((tmp_path / "run" / "lth.json").read_text())
    assert [r["round"] for r in log["rounds"]] == [0, 1, 2, 3]


def test_other_settings_refused(tmp_path):
    from sim.errors import UserError

    data = tiny_data(16)
    cfg = PruneConfig(rounds=0, rate=0.5, rewind_epoch=1, dense=TrainConfig(epochs=1, batch_size=16))
    run_lth(tiny_net, data, data, cfg, tmp_path, progress=False, log=lambda s: None)
    cfg2 = PruneConfig(rounds=0, rate=0.4, rewind_epoch=1, dense=TrainConfig(epochs=1, batch_size=16))
    with pytest.raises(UserError, match="other settings"):
        run_lth(tiny_net, data, data, cfg2, tmp_path, progress=False, log=lambda s: None)


def test_prune_config_validation():
    from sim.errors import UserError

    with pytest.raises(UserError, match="--rate"):
        PruneConfig(rounds=1, rate=1.5)
    with pytest.raises(UserError, match="--rewind-epoch"):
        PruneConfig(rounds=1, rate=0.5, rewind_epoch=99)
    with pytest.raises(UserError, match="--scope"):
        PruneConfig(rounds=1, rate=0.5, scope="layer")


def test_branch_with_other_retrain_settings(tmp_path):
    import shutil

    data = tiny_data(32)
    quiet = dict(progress=False, log=lambda s: None)
    cfg = PruneConfig(rounds=0, rate=0.5, rewind_epoch=1, dense=TrainConfig(epochs=1, batch_size=16))
    run_lth(tiny_net, data, data, cfg, tmp_path / "a", **quiet)
    (tmp_path / "b").mkdir()
    for f in ("round_00.pt", "rewind.pt"):
        shutil.copy(tmp_path / "a" / f, tmp_path / "b" / f)
    cfg2 = PruneConfig(rounds=1, rate=0.5, rewind_epoch=1, dense=TrainConfig(epochs=1, batch_size=16),
                       retrain=TrainConfig(epochs=1, batch_size=16, train_subset=16))
    recs = run_lth(tiny_net, data, data, cfg2, tmp_path / "b", **quiet)
    assert [r["round"] for r in recs] == [0, 1]
    assert recs[0]["settings"]["prune"]["rounds"] == 0  # round 0 keeps the settings it was made with
    assert recs[1]["mask_sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_published_recipe_15_iterations_are_14_prunes_to_98_2():
    """LoAS's --prune_iterations 15 counts the dense iteration: 14 prunes of 25 % -> 98.2 %."""
    from models.prune import LTH_ITERATIONS, LTH_RATE, rounds_from_iterations

    rounds = rounds_from_iterations(LTH_ITERATIONS)
    assert rounds == 14
    torch.manual_seed(0)
    m = default_net(width=4)
    masks = full_masks(m)
    for _ in range(rounds):
        for _, p in prunable(m):
            p.data.normal_()
        masks = magnitude_masks(m, masks, LTH_RATE)
    assert round(100 * mask_sparsity(masks), 1) == 98.2


def test_rewind_fraction_and_iterations_validation():
    from sim.errors import UserError
    from models.prune import LTH_REWIND_FRACTION, rewind_epoch_from_fraction, rounds_from_iterations

    assert rewind_epoch_from_fraction(LTH_REWIND_FRACTION, 150) == 20
    assert rewind_epoch_from_fraction(LTH_REWIND_FRACTION, 5) == 1
    with pytest.raises(UserError, match="--rewind-fraction"):
        rewind_epoch_from_fraction(1.5, 10)
    with pytest.raises(UserError, match="--iterations"):
        rounds_from_iterations(0)
    with pytest.raises(UserError, match="--rewind"):
        PruneConfig(rounds=1, rate=0.5, rewind="all")


def _bn_buffers(m):
    return {n: b.clone() for n, b in m.named_buffers() if "running" in n or "num_batches" in n}


def test_rewind_parameters_only_leaves_bn_buffers_as_they_were():
    from models.prune import rewind

    torch.manual_seed(0)
    point = tiny_net()
    for n, b in point.named_buffers():
        if "running" in n:
            b.fill_(7.0)
    point_sd = {k: v.clone() for k, v in point.state_dict().items()}
    m = tiny_net()  # other parameters and buffers: "the end of the previous round"
    for n, b in m.named_buffers():
        if "running" in n:
            b.uniform_(0.5, 1.5)
    before = _bn_buffers(m)
    masks = magnitude_masks(point, full_masks(point), 0.5)
    rewind(m, point_sd, masks, "params")
    after = _bn_buffers(m)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    for name, p in m.named_parameters():
        expect = point_sd[name] * masks[name] if name in masks else point_sd[name]
        assert torch.equal(p.detach(), expect), name
    rewind(m, point_sd, masks, "state")
    assert all(torch.equal(b, point_sd[n]) for n, b in m.named_buffers())


def test_run_lth_rewinds_parameters_only(tmp_path, monkeypatch):
    """In a run, round 1 starts from the rewind point's parameters and round 0's final BN statistics."""
    import models.prune as prune

    data = tiny_data(32)
    cfg = PruneConfig(rounds=1, rate=0.5, rewind_epoch=1, dense=TrainConfig(epochs=2, batch_size=16),
                      retrain=TrainConfig(epochs=1, batch_size=16))
    seen = {}
    real = prune.train

    def spy(model, *a, **kw):
        if kw.get("tag") == {"round": 1}:
            seen["buffers"] = _bn_buffers(model)
        return real(model, *a, **kw)

    monkeypatch.setattr(prune, "train", spy)
    run_lth(tiny_net, data, data, cfg, tmp_path, progress=False, log=lambda s: None)
    r0 = load_checkpoint(round_path(tmp_path, 0))["model"]
    rw = load_checkpoint(tmp_path / "rewind.pt")["model"]
    assert seen["buffers"] and all(torch.equal(b, r0[n]) for n, b in seen["buffers"].items())
    assert not all(torch.equal(rw[n], r0[n]) for n in seen["buffers"] if "running_mean" in n)


def test_bn_recalibration_replaces_stale_statistics():
    from models.prune import recalibrate_bn

    torch.manual_seed(0)
    m = tiny_net()
    bns = [x for x in m.modules() if isinstance(x, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.running_mean.fill_(100.0)
    recalibrate_bn(m, tiny_data(32), 2, 16)
    assert all(bn.running_mean.abs().max() < 50 and bn.momentum == 0.1 for bn in bns)
    assert all(int(bn.num_batches_tracked) == 2 for bn in bns)


def test_per_timestep_loss_is_mean_of_per_t_cross_entropies():
    import torch.nn.functional as F
    from models.train import snn_loss

    torch.manual_seed(0)
    m = tiny_net()
    x, y = torch.randn(5, 1, 28, 28), torch.randint(0, 10, (5,))
    out = m(x)
    per_t = torch.stack([F.cross_entropy(m.last_logits[t], y) for t in range(m.T)]).mean()
    assert torch.allclose(snn_loss(m, out, y, "per_timestep"), per_t)
    assert torch.allclose(snn_loss(m, out, y, "mean_logits"), F.cross_entropy(out, y))


def test_progress_bar_postfix_does_not_defeat_mininterval(tmp_path, monkeypatch):
    """set_postfix is called at most once a second and never forces a redraw."""
    import tqdm

    calls = []
    real = tqdm.tqdm.set_postfix

    def spy(self, *a, **kw):
        calls.append(kw.get("refresh", True))
        return real(self, *a, **kw)

    monkeypatch.setattr(tqdm.tqdm, "set_postfix", spy)
    m = tiny_net()
    cfg = TrainConfig(epochs=1, batch_size=4)
    t0 = __import__("time").time()
    train(m, tiny_data(48), cfg, tmp_path / "s.pt", progress=True, log=lambda s: None)
    seconds = __import__("time").time() - t0
    assert calls and not any(calls)  # refresh=False every time
    assert len(calls) <= seconds + 1  # 12 batches, at most one postfix a second
