"""Fuzz: seeded mutants of every input format of `loas` (trace layers and manifests, configs, energy
constants, the Prosperity pickle) through the command line in process. Every mutant ends with exit 0,
1 or 2 in bounded time, never a traceback; the good inputs never change (tests/fuzzing.py; the
>= 10 000-mutant run is bench/fuzz.py)."""

import pytest

from fuzzing import Fuzzer


@pytest.mark.parametrize("target", Fuzzer.TARGETS)
def test_mutants_exit_0_1_2_without_traceback(tmp_path, target):
    fz = Fuzzer(tmp_path, seed=Fuzzer.TARGETS.index(target), limit_s=20.0)
    for _ in range(25):
        fz.case(target)
    r = fz.result
    assert r.cases == 25 and not r.tracebacks and not r.multiline, (r.tracebacks + r.multiline)[:2]
    assert not r.slow and not r.rewritten_inputs and fz.good_unchanged()
    assert r.codes.get(2, 0) > 0  # the mutants do reach the validation


def test_the_good_inputs_are_accepted(tmp_path):
    # mutants start from inputs the command line accepts, so a mutant's refusal is the mutation's doing
    from fuzzing import call

    fz = Fuzzer(tmp_path)
    assert call(["trace", "verify", fz.wl])[0] == 0
    assert call(["sim", fz.wl, "--config", fz.good / "loas.yaml", "--energy", fz.good / "energy.yaml"])[0] == 0
    rc, out, err = call(["trace", "import-prosperity", fz.pickle, "--name", "fz", "--out", tmp_path / "out",
                         "--weight-sparsity", "0.5"])
    assert rc == 0, err
