"""A seeded mutator over the inputs of `loas` (trace layer files and manifests, LoAS and energy
configs, the Prosperity pickle) and a harness that runs the command line on each mutant in process.

Used by tests/test_fuzz.py (a few hundred mutants) and bench/fuzz.py (>= 10 000). The contract
checked for every mutant: exit code 0, 1 or 2; no exception escapes ``loas.cli.main`` and no
traceback is printed; every call ends within ``limit_s``; the good inputs are never changed (their
sha256 before and after the whole run) and no command rewrites the file it was given.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import shutil
import time
import traceback
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 15, 16, 17, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -(2**31), 2**32,
                    2**40, 2**62, 2**63 - 1, -(2**63), 10**6, 10**9]
INTERESTING_YAML = [".nan", ".inf", "-.inf", "0", "-1", "1e309", "99999999999999999999999", "true", "null", "''",
                    "[1, 2]", "{a: 1}", "*x", "&x [*x]", "0x10", "1.5", "\"é\"", "[[[[[[]]]]]]", "~", "!!binary AA==",
                    "2147483648", "18446744073709551616", "conv", "fc", "loas-trace", "mntk", "1000000000"]
YAML_KEYS = ["pes", "T", "timesteps", "layers", "name", "file", "kind", "format", "version", "provenance", "tile",
             "buffer", "m", "clock_mhz", "op_pj", "designs", "1", "null", "x" * 50]


def sha(path: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() if Path(path).is_dir() else b"")
            h.update(p.read_bytes())
    return h.hexdigest()


# byte- and text-level mutations ---------------------------------------------------------------
def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    if not b:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    op = rng.randrange(7)
    i = rng.randrange(len(b))
    if op == 0:
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        for _ in range(rng.randrange(1, 9)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == 2:
        del b[i:]
    elif op == 3:
        del b[i:i + rng.randrange(1, 64)]
    elif op == 4:
        j = rng.randrange(len(b))
        b[i:i] = b[j:j + rng.randrange(1, 64)]
    elif op == 5:
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    else:
        b[i:i + rng.randrange(1, 64)] = bytes(rng.randrange(1, 64))
    return bytes(b)


def mutate_yaml(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    op = rng.randrange(9)
    if op == 0 or not lines:
        return mutate_bytes(rng, text.encode())
    i = rng.randrange(len(lines))
    if op == 1:  # a value replaced
        line = lines[i]
        if ":" in line:
            k, _, _ = line.partition(":")
            lines[i] = f"{k}: {rng.choice(INTERESTING_YAML)}"
        else:
            lines[i] = line + " " + rng.choice(INTERESTING_YAML)
    elif op == 2:  # a number token replaced
        toks = line_tokens = lines[i].split(" ")
        nums = [j for j, t in enumerate(line_tokens) if t.strip(",}]").replace(".", "", 1).lstrip("-").isdigit()]
        if nums:
            j = rng.choice(nums)
            tail = toks[j][len(toks[j].rstrip(",}]")):]
            toks[j] = str(rng.choice(INTERESTING_INTS + [1e309, float("nan")])) + tail
            lines[i] = " ".join(toks)
    elif op == 3:
        del lines[i]
    elif op == 4:
        lines.insert(rng.randrange(len(lines) + 1), lines[i])
    elif op == 5:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif op == 6:  # a key replaced
        if ":" in lines[i]:
            k, _, v = lines[i].partition(":")
            ind = k[: len(k) - len(k.lstrip())]
            lines[i] = f"{ind}{rng.choice(YAML_KEYS)}:{v}"
    elif op == 7:  # an alias bomb or a recursive anchor
        bomb = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]"] + [
            f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
        lines = bomb + [ln.replace(rng.choice(["16", "4", "conv", "0"]), "*i") for ln in lines]
    else:
        return (("\n".join(lines)).encode("utf-8")[: rng.randrange(1, len(text) + 2)] +
                bytes([rng.choice([0xff, 0xfe, 0xc3, 0x80, 0xe9])]))
    return ("\n".join(lines) + "\n").encode("utf-8")


# structure-aware npz mutations --------------------------------------------------------------------
def mutate_npz(rng: random.Random, data: bytes) -> bytes:
    if rng.random() < 0.4:
        return mutate_bytes(rng, data)
    with np.load(io.BytesIO(data)) as z:
        m = {k: z[k] for k in z.files}
    key = rng.choice(list(m))
    a = m[key]
    op = rng.randrange(7)
    if op == 0:
        del m[key]
    elif op == 1 and a.size:  # one element set to an interesting value
        flat = a.astype(np.int64 if a.dtype.kind in "iub" else a.dtype).reshape(-1).copy()
        v = rng.choice(INTERESTING_INTS)
        flat[rng.randrange(flat.size)] = np.int64(v) if -(2**63) <= v < 2**63 else 0
        m[key] = flat.reshape(a.shape).astype(a.dtype, casting="unsafe") if rng.random() < 0.5 else flat.reshape(a.shape)
    elif op == 2:  # another dtype
        dt = rng.choice([np.float32, np.float64, np.int8, np.uint8, np.int16, np.uint16, np.int64, np.uint64,
                         np.bool_, np.complex64])
        m[key] = a.astype(dt)
    elif op == 3:  # another shape
        choice = rng.randrange(4)
        if choice == 0:
            m[key] = a.reshape(-1)
        elif choice == 1:
            m[key] = a[None]
        elif choice == 2 and a.ndim:
            m[key] = a[: max(0, a.shape[0] - 1)]
        else:
            m[key] = np.concatenate([a, a]) if a.ndim else np.array([a, a])
    elif op == 4:  # geometry entry
        g = m.get("geometry")
        if g is not None:
            g = g.copy()
            g[rng.randrange(g.size)] = rng.choice(INTERESTING_INTS[:14])
            m["geometry"] = g
    elif op == 5:
        m[rng.choice(["residual", "extra", "T2"])] = a
    else:  # declared shape bomb: the header says huge, the data are the old bytes
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for k, v in m.items():
                b = io.BytesIO()
                if k == key:
                    shape = tuple(rng.choice([10**9, 2**31, 10**6, 7]) for _ in range(max(1, a.ndim)))
                    np.lib.format.write_array_header_1_0(b, {"descr": np.lib.format.dtype_to_descr(a.dtype),
                                                             "fortran_order": False, "shape": shape})
                    b.write(a.tobytes())
                else:
                    np.lib.format.write_array(b, v)
                zf.writestr(k + ".npy", b.getvalue())
        return buf.getvalue()
    buf = io.BytesIO()
    np.savez_compressed(buf, **m)
    return buf.getvalue()


# the harness --------------------------------------------------------------------------------------
@dataclass
class Result:
    cases: int = 0
    codes: dict = field(default_factory=dict)
    tracebacks: list = field(default_factory=list)  # an escape, a traceback or an exit code not 0/1/2
    multiline: list = field(default_factory=list)  # exit 2 whose stderr is not the one line
    slow: list = field(default_factory=list)
    rewritten_inputs: list = field(default_factory=list)
    max_s: float = 0.0
    by_target: dict = field(default_factory=dict)


def call(argv) -> tuple[int, str, str]:
    from loas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else -1
            err.write(f"SystemExit escaped main: {exc.code!r}\n")
        except BaseException:  # noqa: BLE001  any escape is the failure we look for
            err.write(traceback.format_exc())
            rc = -1
    return rc, out.getvalue(), err.getvalue()


class Fuzzer:
    """Builds the good inputs once in ``root``, then runs mutants of them.

    Targets: ``layer`` (an npz of a workload), ``manifest``, ``config``, ``energy``, ``pickle``.
    """

    TARGETS = ("layer", "manifest", "config", "energy", "pickle")

    def __init__(self, root: Path, seed: int = 0, limit_s: float = 20.0):
        from sim.config import CONFIG_DIR
        from sim.synthetic import write_random_workload
        from sim.trace import Geometry

        self.root = Path(root)
        self.rng = random.Random(seed)
        self.limit_s = limit_s
        self.good = self.root / "good"
        self.wl = write_random_workload(self.good / "wl", {"conv2": Geometry(4, 4, 4, 3, 1, 1, 8),
                                                           "fc": Geometry.fc(16, 4)}, T=4, seed=5)
        shutil.copy(CONFIG_DIR / "loas.yaml", self.good / "loas.yaml")
        shutil.copy(CONFIG_DIR / "energy.yaml", self.good / "energy.yaml")
        self.pickle = self.good / "spikes.pkl"
        self._write_pickle(self.pickle)
        self.digest = sha(self.good)
        self.work = self.root / "case"
        self.result = Result()

    @staticmethod
    def _write_pickle(path):
        # a good file in the published format: LoAS AlexNet's shapes (the smallest of the three
        # tables), T = 1 to keep each mutant small
        from test_models_prosperity import arch_file

        arch_file(path, "alexnet", T=1, rate=0.2)

    def case(self, target: str | None = None):
        rng = self.rng
        target = target or rng.choice(self.TARGETS)
        if self.work.exists():
            shutil.rmtree(self.work)
        self.work.mkdir(parents=True)
        wl = self.work / "wl"
        if target == "layer":
            shutil.copytree(self.wl, wl)
            f = wl / rng.choice(["conv2.npz", "fc.npz"])
            f.write_bytes(mutate_npz(rng, f.read_bytes()))
            layer = f.stem
            argv = rng.choice([["trace", "stats", wl], ["golden", wl, "--layer", layer], ["trace", "verify", wl],
                               ["sim", wl, "--layer", layer], ["sim", wl, "--design", "sparten", "--layer", layer]])
            inputs = [f]
        elif target == "manifest":
            shutil.copytree(self.wl, wl)
            f = wl / "manifest.yaml"
            f.write_bytes(mutate_yaml(rng, f.read_text()))
            argv = rng.choice([["trace", "stats", wl], ["golden", wl, "--layer", "fc"], ["trace", "verify", wl],
                               ["sim", wl, "--layer", "conv2"]])
            inputs = [f]
        elif target in ("config", "energy"):
            # a new name per case: load_energy caches by path (the CLI reads a file once per process)
            f = self.work / f"{target}-{self.result.cases}.yaml"
            f.write_bytes(mutate_yaml(rng, (self.good / ("loas.yaml" if target == "config" else "energy.yaml"))
                                      .read_text()))
            opt = "--config" if target == "config" else "--energy"
            argv = rng.choice([["sim", self.wl, opt, f, "--layer", rng.choice(["conv2", "fc"])],
                               ["sim", self.wl, opt, f, "--design", rng.choice(["gospa", "stellar", "ptb"])]])
            if target == "config" and rng.random() < 0.2:
                argv = ["rtl", "sim", self.wl, "--layer", "fc", "--config", f, "--simulator", "none-such"]
            inputs = [f]
        else:
            f = self.work / "spikes.pkl"
            f.write_bytes(mutate_bytes(rng, self.pickle.read_bytes()) if rng.random() < 0.8 else
                          self.pickle.read_bytes()[: rng.randrange(1, self.pickle.stat().st_size)])
            argv = ["trace", "import-prosperity", f, "--name", "fz", "--out", self.work / "out",
                    "--weight-sparsity", "0.5"]
            inputs = [f]
        before = {p: sha(p) for p in inputs}
        t0 = time.perf_counter()
        rc, out, err = call(argv)
        dt = time.perf_counter() - t0
        r = self.result
        r.cases += 1
        r.codes[rc] = r.codes.get(rc, 0) + 1
        r.by_target[target] = r.by_target.get(target, 0) + 1
        r.max_s = max(r.max_s, dt)
        bad = rc not in (0, 1, 2) or "Traceback" in err
        if rc == 2 and not bad and err.count("\n") != 1:
            r.multiline.append((target, [str(a) for a in argv], rc, err[-3000:]))
            bad = True
        elif bad:
            r.tracebacks.append((target, [str(a) for a in argv], rc, err[-3000:]))
        if bad:
            keep = self.root / "failures" / f"{len(r.tracebacks) + len(r.multiline):04d}"
            keep.mkdir(parents=True, exist_ok=True)
            for p in inputs:
                shutil.copy(p, keep / p.name)
        if dt > self.limit_s:
            r.slow.append((target, [str(a) for a in argv], dt))
        for p, h in before.items():
            if sha(p) != h:
                r.rewritten_inputs.append((target, str(p)))
        return rc

    def good_unchanged(self) -> bool:
        return sha(self.good) == self.digest
