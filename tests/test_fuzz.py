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
    assert r.cases == 25 and not r.tracebacks, r.tracebacks[:2]
    assert not r.slow and not r.rewritten_inputs and fz.good_unchanged()
    assert r.codes.get(2, 0) > 0  # the mutants do reach the validation
