"""Trace format v1: the on-disk workload that joins models/, sim/ and hw/ (see traces/README.md).

A workload is a directory with ``manifest.yaml`` and one compressed ``.npz`` per spike layer.
A layer file may hold the optional member ``residual`` (int32 ``[S, T, M, N]``): an integer input
current added to O[t] before the P-LIF (the shortcut of a ResNet block, ``sim.golden.run_layer``'s
``residual``). Files without it read exactly as before. (A reader from before this member existed
ignores it: ``loas trace verify`` of such a build reports the layer's outputs as mismatched.)
Everything is validated on load; any problem raises :class:`~sim.errors.TraceError` naming the file
and the field. Writers are atomic (:func:`sim.atomic.write_file`: temp file in the same directory,
then ``os.replace``), so an interrupted export never leaves a half-written file behind; whole
workloads are swapped in by :func:`sim.atomic.replace_dir`.
"""

from __future__ import annotations

import collections
import datetime as _dt
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from sim.atomic import write_file
from sim.config import read_yaml, short_repr
from sim.errors import TraceError
from sim.fibers import MAX_T
from sim.golden import BIAS_BITS, RESIDUAL_BITS, LIFParams, int_range_problem

FORMAT = "loas-trace"
VERSION = 1
TRACES_DIR = Path(os.environ.get("LOAS_TRACES", Path(__file__).resolve().parent.parent / "traces"))
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")
# sim.atomic.replace_dir / check_target arguments of a workload directory: only manifest and layers
WORKLOAD_TARGET = dict(what="workload", owned=lambda n: n == "manifest.yaml" or n.endswith(".npz"))


def check_workload_name(name, flag: str = "--name") -> str:
    """A workload name is one plain word (a letter, then letters, digits, ``_ . -``): never empty,
    absolute, or a path that leaves the traces folder. Raises UserError naming the flag and value."""
    from sim.errors import UserError

    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UserError(f"{flag}: invalid workload name {name!r} (a letter, then letters, digits, "
                        f"'_', '.' or '-'; no path)")
    return name

#: Largest array a layer file may declare or a layer may imply (bytes; the im2col GEMM operand of one
#: sample, the expected outputs, the residual): checked from the geometry and the npy headers before
#: anything is allocated. VGG16's largest layer needs ~1 MB per sample. LOAS_MAX_ARRAY_BYTES overrides.
MAX_ARRAY_BYTES = int(os.environ.get("LOAS_MAX_ARRAY_BYTES", 2**30))
#: Most spike layers a manifest may list.
MAX_LAYERS = 1024

# npz members of a layer file, with the dtypes a loader accepts.
_LAYER_FIELDS = {
    "format_version": ("integer", ()),
    "T": ("integer", ()),
    "geometry": ("integer", (7,)),
    "spike_words": ("uint16", None),
    "weight": ("int8", None),
    "bias": ("integer", None),
    "threshold": ("integer", ()),
    "decay_shift": ("integer", ()),
    "n_mask": ("integer", ()),
    "expected_out_words": ("uint16", None),
}
# Optional members (meaning in the module docstring); absent means zero / none.
_OPTIONAL_FIELDS = {
    "residual": ("int32", None),
}


@dataclass(frozen=True)
class Geometry:
    """Convolution geometry of a spike layer; a fully connected layer is a 1x1 conv on a 1x1 image.

    GEMM view (spec/loas.md section 1): M = h_out * w_out, K = c_in * kernel^2, N = c_out; the K
    order is (c_in, ky, kx), i.e. torch's ``weight.reshape(c_out, -1)``.
    """

    c_in: int
    h: int
    w: int
    kernel: int
    stride: int
    padding: int
    c_out: int

    def __post_init__(self):
        for name in ("c_in", "h", "w", "kernel", "stride", "c_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"geometry {name} must be >= 1, got {getattr(self, name)}")
        if self.padding < 0:
            raise ValueError(f"geometry padding must be >= 0, got {self.padding}")
        if self.h_out < 1 or self.w_out < 1:
            raise ValueError(f"geometry gives an empty output ({self.h_out}x{self.w_out})")

    @classmethod
    def fc(cls, k: int, n: int) -> "Geometry":
        return cls(c_in=k, h=1, w=1, kernel=1, stride=1, padding=0, c_out=n)

    @property
    def h_out(self) -> int:
        return (self.h + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def w_out(self) -> int:
        return (self.w + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def M(self) -> int:
        return self.h_out * self.w_out

    @property
    def K(self) -> int:
        return self.c_in * self.kernel * self.kernel

    @property
    def N(self) -> int:
        return self.c_out

    def as_array(self) -> np.ndarray:
        return np.array(
            [self.c_in, self.h, self.w, self.kernel, self.stride, self.padding, self.c_out], dtype=np.int64
        )


def im2col(image: np.ndarray, g: Geometry) -> np.ndarray:
    """(..., C, H, W) array -> (..., M, K) GEMM rows, zero padding, K order (c, ky, kx).

    Leading dimensions (samples) are kept: ``im2col(spike_words, g)`` gives every sample's rows
    at once.
    """
    p, lead = g.padding, image.ndim - 3
    padded = np.pad(image, ((0, 0),) * (lead + 1) + ((p, p), (p, p))) if p else image
    win = np.lib.stride_tricks.sliding_window_view(padded, (g.kernel, g.kernel), axis=(-2, -1))
    win = win[..., :: g.stride, :: g.stride, :, :][..., : g.h_out, : g.w_out, :, :]  # (.., C, Ho, Wo, k, k)
    axes = tuple(range(lead)) + tuple(lead + a for a in (1, 2, 0, 3, 4))
    return np.ascontiguousarray(win.transpose(axes)).reshape(*image.shape[:lead], g.M, g.K)


class Layer:
    """One spike layer of a workload, loaded and validated from its ``.npz`` file.

    Attributes
    ----------
    name, path, T, geometry (:class:`Geometry`), lif (:class:`~sim.golden.LIFParams`), n_mask,
    samples (S), spike_words (uint16 (S, C_in, H, W)), weight (int8 (C_out, C_in, k, k)),
    bias (int64 (C_out,)), expected_out_words (uint16 (S, M, N)), residual (int32 (S, T, M, N) or
    None: the optional residual input current, see :meth:`residual_current`).

    Raises
    ------
    TraceError
        On a missing, unreadable or inconsistent file or field.
    """

    def __init__(self, path: Path, *, T: int | None = None, name: str | None = None):
        self.path = Path(path)
        self.name = name or self.path.stem
        data = self._read()
        fv = int(data["format_version"])
        if fv != VERSION:
            self._fail("format_version", f"unknown version {fv} (this loas reads version {VERSION})")
        self.T = int(data["T"])
        if not 1 <= self.T <= MAX_T:
            self._fail("T", f"must be in 1..{MAX_T}, got {self.T}")
        if T is not None and self.T != T:
            self._fail("T", f"is {self.T} but the manifest says T={T}")
        g = self.geometry = data["_geometry"]
        words = data["spike_words"]
        if words.ndim != 4 or words.shape[1:] != (g.c_in, g.h, g.w):
            self._fail("spike_words", f"shape {words.shape} does not match geometry (S, {g.c_in}, {g.h}, {g.w})")
        if words.shape[0] < 1:
            self._fail("spike_words", "holds no sample (S = 0)")
        if int(words.max(initial=0)) >> self.T:
            bad = int(words.max())
            self._fail("spike_words", f"non-binary spikes: word {bad} has bits above T={self.T}")
        self.spike_words = words
        self.samples = words.shape[0]
        weight = data["weight"]
        if weight.shape != (g.c_out, g.c_in, g.kernel, g.kernel):
            self._fail("weight", f"shape {weight.shape} does not match geometry ({g.c_out}, {g.c_in}, {g.kernel}, {g.kernel}) (K mismatch)")
        self.weight = weight
        bias = data["bias"]
        if bias.shape != (g.c_out,):
            self._fail("bias", f"shape {bias.shape}, expected ({g.c_out},)")
        problem = int_range_problem(bias, BIAS_BITS)
        if problem:
            self._fail("bias", problem)
        self.bias = bias.astype(np.int64)
        try:
            self.lif = LIFParams(int(data["threshold"]), int(data["decay_shift"]))
        except ValueError as exc:
            self._fail("threshold", str(exc))
        self.n_mask = int(data["n_mask"])
        if self.n_mask not in (0, 1, 2):
            self._fail("n_mask", f"must be 0, 1 or 2, got {self.n_mask}")
        exp = data["expected_out_words"]
        if exp.shape != (self.samples, g.M, g.N):
            self._fail("expected_out_words", f"shape {exp.shape}, expected ({self.samples}, {g.M}, {g.N})")
        if int(exp.max(initial=0)) >> self.T:
            self._fail("expected_out_words", f"word {int(exp.max())} has bits above T={self.T}")
        self.expected_out_words = exp
        res = data.get("residual")  # int32 by dtype: its range needs no check
        if res is not None and res.shape != (self.samples, self.T, g.M, g.N):
            self._fail("residual", f"shape {res.shape}, expected (S, T, M, N) = "
                                   f"({self.samples}, {self.T}, {g.M}, {g.N})")
        self.residual = res

    def _fail(self, field: str, problem: str):
        raise TraceError(self.path, field, problem)

    def _geometry(self, arr) -> Geometry:
        vals = [int(v) for v in arr]
        if any(not -(2**40) < v < 2**40 for v in vals):
            self._fail("geometry", f"{vals}: value out of range")
        try:
            g = Geometry(*vals)
        except ValueError as exc:
            self._fail("geometry", f"{vals}: {exc}")
        # Bound what the geometry implies before anything of that size is read or built.
        for what, n, item in (("im2col operand M x K", g.M * g.K, 2), ("padded image", g.c_in *
                              (g.h + 2 * g.padding) * (g.w + 2 * g.padding), 2),
                              ("weights", g.N * g.K, 1), ("outputs M x N", g.M * g.N, 2)):
            if n * item > MAX_ARRAY_BYTES:
                self._fail("geometry", f"{vals}: the {what} needs {n * item} bytes per sample, more than "
                                       f"{MAX_ARRAY_BYTES} (LOAS_MAX_ARRAY_BYTES)")
        return g

    def _read(self) -> dict:
        if not self.path.is_file():
            self._fail("file", "does not exist")
        try:
            # Open the file ourselves: np.load leaks its handle when the zip directory is corrupt.
            with open(self.path, "rb") as fh, zipfile.ZipFile(fh) as zf:
                names = set(zf.namelist())

                def header(key):
                    """(shape, dtype) from the member's npy header, without reading its data."""
                    with zf.open(key + ".npy") as f:
                        version = np.lib.format.read_magic(f)
                        if version == (1, 0):
                            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                        elif version == (2, 0):
                            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                        else:
                            self._fail(key, f"unsupported npy version {version}")
                    return shape, dtype

                def member(key, kind, shape, want=None):
                    if key + ".npy" not in names:
                        self._fail(key, "missing")
                    got, dtype = header(key)
                    ok = np.issubdtype(dtype, np.integer) if kind == "integer" else dtype == np.dtype(kind)
                    if not ok:
                        self._fail(key, f"wrong dtype {dtype}, expected {kind}")
                    if shape is not None and got != shape:
                        self._fail(key, f"wrong shape {got}, expected {shape}")
                    nbytes = int(np.prod(got, dtype=object)) * dtype.itemsize
                    if nbytes > MAX_ARRAY_BYTES:
                        self._fail(key, f"shape {got} declares {nbytes} bytes, more than {MAX_ARRAY_BYTES} "
                                        f"(LOAS_MAX_ARRAY_BYTES)")
                    if want is not None and not want(got):
                        return None  # the caller reports the shape mismatch with its context
                    with zf.open(key + ".npy") as f:
                        return np.lib.format.read_array(f, allow_pickle=False)

                data = {}
                for key in ("format_version", "T", "geometry", "threshold", "decay_shift", "n_mask"):
                    kind, shape = _LAYER_FIELDS[key]
                    data[key] = member(key, kind, shape)
                g = data["_geometry"] = self._geometry(data["geometry"])
                # The big members: their declared shapes must fit the geometry before they are read.
                fits = {
                    "spike_words": lambda sh: len(sh) == 4 and tuple(sh[1:]) == (g.c_in, g.h, g.w),
                    "weight": lambda sh: tuple(sh) == (g.c_out, g.c_in, g.kernel, g.kernel),
                    "bias": lambda sh: tuple(sh) == (g.c_out,),
                }
                for key in ("spike_words", "weight", "bias"):
                    kind, _ = _LAYER_FIELDS[key]
                    arr = member(key, kind, None, fits[key])
                    data[key] = arr if arr is not None else _Shape(header(key)[0])
                S = data["spike_words"].shape[0]
                kind, _ = _LAYER_FIELDS["expected_out_words"]
                arr = member("expected_out_words", kind, None, lambda sh: tuple(sh) == (S, g.M, g.N))
                data["expected_out_words"] = arr if arr is not None else _Shape(header("expected_out_words")[0])
                for key, (kind, _) in _OPTIONAL_FIELDS.items():
                    if key + ".npy" in names:
                        arr = member(key, kind, None, lambda sh: len(sh) == 4 and sh[0] == S and
                                     sh[1] <= MAX_T and tuple(sh[2:]) == (g.M, g.N))
                        data[key] = arr if arr is not None else _Shape(header(key)[0])
        except TraceError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, zlib.error,
                NotImplementedError, RuntimeError, KeyError, OverflowError, SyntaxError) as exc:
            # what a damaged archive raises while it is read: bad zip directory, CRC, deflate stream,
            # npy header, an unsupported or encrypted zip member
            self._fail("npz", f"not a readable npz archive ({type(exc).__name__}: {short_repr(str(exc))})")
        return data

    # GEMM views ----------------------------------------------------------------------------------
    def words(self, sample: int = 0) -> np.ndarray:
        """Packed input spike words of one sample as the GEMM operand A: uint16 (M, K)."""
        self._check_sample(sample)
        return im2col(self.spike_words[sample], self.geometry)

    def weights_kn(self) -> np.ndarray:
        """Weights as the GEMM operand B: int8 (K, N)."""
        return np.ascontiguousarray(self.weight.reshape(self.geometry.N, self.geometry.K).T)

    def expected(self, sample: int = 0) -> np.ndarray:
        self._check_sample(sample)
        return self.expected_out_words[sample]

    def residual_current(self, sample: int = 0) -> np.ndarray | None:
        """The residual input current of one sample, int32 (T, M, N), or None when the layer has none."""
        self._check_sample(sample)
        return None if self.residual is None else self.residual[sample]

    def _check_sample(self, sample: int) -> None:
        if not 0 <= sample < self.samples:
            raise TraceError(self.path, "sample", f"{sample} out of range: the layer holds {self.samples} sample(s)")


class _Shape:
    """Stands for a member whose declared shape does not fit the geometry: never read, only its
    shape reported by the check that refuses it."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.ndim = len(self.shape)


@dataclass(frozen=True)
class LayerEntry:
    name: str
    file: str
    kind: str


class Workload:
    """A trace workload directory: the manifest plus lazily loaded :class:`Layer` objects.

    Parameters
    ----------
    path : Path
        The workload directory (containing ``manifest.yaml``).

    Raises
    ------
    TraceError
        When the manifest is missing or invalid (unknown format version, bad T, bad layer list).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        mpath = self.path / "manifest.yaml"
        if not mpath.is_file():
            raise TraceError(mpath, "file", "does not exist (not a trace workload directory)")
        def fail(field, problem):
            raise TraceError(mpath, field.strip("<>"), problem)

        man = read_yaml(mpath, fail)
        if not isinstance(man, dict):
            raise TraceError(mpath, "manifest", "must be a mapping")

        def need(key, typ):
            if key not in man:
                raise TraceError(mpath, key, "missing")
            if not isinstance(man[key], typ) or isinstance(man[key], bool) and typ is not bool:
                raise TraceError(mpath, key, f"wrong type {type(man[key]).__name__}, value {short_repr(man[key])}")
            return man[key]

        if need("format", str) != FORMAT:
            raise TraceError(mpath, "format", f"is {short_repr(man['format'])}, expected {FORMAT!r}")
        version = need("version", int)
        if version != VERSION:
            raise TraceError(mpath, "version", f"unknown version {version} (this loas reads version {VERSION})")
        self.manifest_path = mpath
        self.name = need("name", str)
        self.T = need("T", int)
        if not 1 <= self.T <= MAX_T:
            raise TraceError(mpath, "T", f"must be in 1..{MAX_T}, got {self.T}")
        self.provenance = need("provenance", dict)
        entries = need("layers", list)
        if not entries:
            raise TraceError(mpath, "layers", "is empty")
        if len(entries) > MAX_LAYERS:
            raise TraceError(mpath, "layers", f"{len(entries)} layers, more than the {MAX_LAYERS} a workload may have")
        self.entries: list[LayerEntry] = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or set(e) != {"name", "file", "kind"}:
                raise TraceError(mpath, f"layers[{i}]", f"must have exactly the keys name, file, kind; got "
                                                        f"{short_repr(e)}")
            if not isinstance(e["name"], str) or not _NAME_RE.match(e["name"]):
                raise TraceError(mpath, f"layers[{i}].name", f"invalid layer name {short_repr(e['name'])}")
            if not isinstance(e["kind"], str) or e["kind"] not in ("conv", "fc"):
                raise TraceError(mpath, f"layers[{i}].kind", f"must be conv or fc, got {short_repr(e['kind'])}")
            if not isinstance(e["file"], str) or "/" in e["file"] or not e["file"].endswith(".npz"):
                raise TraceError(mpath, f"layers[{i}].file",
                                 f"must be a .npz file name in the workload, got {short_repr(e['file'])}")
            self.entries.append(LayerEntry(e["name"], e["file"], e["kind"]))
        names = [e.name for e in self.entries]
        dup = {n for n, c in collections.Counter(names).items() if c > 1}
        if dup:
            raise TraceError(mpath, "layers", f"duplicate layer names {sorted(dup)}")
        self._cache: dict[str, Layer] = {}

    @property
    def layer_names(self) -> list[str]:
        return [e.name for e in self.entries]

    def layer(self, name: str) -> Layer:
        """Load (once) and return the named layer; an unknown name lists the existing ones."""
        if name not in self._cache:
            entry = next((e for e in self.entries if e.name == name), None)
            if entry is None:
                raise TraceError(
                    self.manifest_path, "layers", f"no layer {name!r}; this workload has {', '.join(self.layer_names)}"
                )
            self._cache[name] = Layer(self.path / entry.file, T=self.T, name=name)
        return self._cache[name]

    def layers(self):
        for name in self.layer_names:
            yield self.layer(name)


def available_workloads(root: Path = None) -> list[str]:
    root = Path(root or TRACES_DIR)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "manifest.yaml").is_file())


def resolve_workload(name_or_path: str | Path) -> Path:
    """A workload given as a directory path or as a name under traces/."""
    p = Path(name_or_path)
    if p.is_dir():
        return p
    q = TRACES_DIR / str(name_or_path)
    if q.is_dir():
        return q
    avail = available_workloads()
    raise TraceError(
        name_or_path, "workload",
        f"no such workload directory or name under {TRACES_DIR}; available: {', '.join(avail) or 'none'}",
    )


def load_workload(name_or_path: str | Path) -> Workload:
    return Workload(resolve_workload(name_or_path))


# Writers ----------------------------------------------------------------------------------------
def write_layer(
    path: str | Path,
    *,
    T: int,
    geometry: Geometry,
    spike_words: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    lif: LIFParams,
    n_mask: int,
    expected_out_words: np.ndarray,
    residual: np.ndarray | None = None,
) -> Path:
    """Validate and atomically write one layer file. Raises TraceError naming the bad field.

    ``residual`` (optional): integer (S, T, M, N) input current added to O[t] before the P-LIF,
    stored as int32; values outside the int32 range are refused. None writes no member at all, so
    a layer without residual is byte-for-byte the file it always was.
    """
    write_and_load_layer(path, T=T, geometry=geometry, spike_words=spike_words, weight=weight, bias=bias,
                         lif=lif, n_mask=n_mask, expected_out_words=expected_out_words, residual=residual)
    return Path(path)


def write_and_load_layer(
    path: str | Path,
    *,
    T: int,
    geometry: Geometry,
    spike_words: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    lif: LIFParams,
    n_mask: int,
    expected_out_words: np.ndarray,
    residual: np.ndarray | None = None,
) -> Layer:
    """:func:`write_layer`, returning the :class:`Layer` read back from the file just written (the
    loader validates it; a caller that checks what is on disk need not read it a second time).

    Raises
    ------
    TraceError
        Naming the bad field, as :func:`write_layer`.
    """
    path = Path(path)

    def fail(field, problem):
        raise TraceError(path, field, problem)

    spike_words = np.asarray(spike_words)
    if not 1 <= T <= MAX_T:
        fail("T", f"must be in 1..{MAX_T}, got {T}")
    if spike_words.dtype != np.uint16:
        fail("spike_words", f"must be uint16 packed words, got {spike_words.dtype}")
    if int(spike_words.max(initial=0)) >> T:
        fail("spike_words", f"non-binary spikes: word {int(spike_words.max())} has bits above T={T}")
    weight = np.asarray(weight)
    if weight.dtype != np.int8:
        fail("weight", f"must be int8, got {weight.dtype}")
    bias = np.asarray(bias)
    if not np.issubdtype(bias.dtype, np.integer):
        fail("bias", f"must be integer, got {bias.dtype}")
    problem = int_range_problem(bias, BIAS_BITS)
    if problem:
        fail("bias", problem)
    arrays = dict(
        format_version=np.int64(VERSION),
        T=np.int64(T),
        geometry=geometry.as_array(),
        spike_words=spike_words,
        weight=weight,
        bias=bias.astype(np.int64),
        threshold=np.int64(lif.threshold),
        decay_shift=np.int64(lif.decay_shift),
        n_mask=np.int64(n_mask),
        expected_out_words=np.asarray(expected_out_words, dtype=np.uint16),
    )
    if residual is not None:
        residual = np.asarray(residual)
        if not np.issubdtype(residual.dtype, np.integer):
            fail("residual", f"must be integer, got {residual.dtype}")
        want = (spike_words.shape[0], T, geometry.M, geometry.N)
        if residual.shape != want:
            fail("residual", f"shape {residual.shape}, expected (S, T, M, N) = {want}")
        problem = int_range_problem(residual, RESIDUAL_BITS)
        if problem:
            fail("residual", problem)
        arrays["residual"] = residual.astype(np.int32)
    write_file(path, lambda f: np.savez_compressed(f, **arrays))
    return Layer(path, T=T)  # re-read: never leave a file behind that our own loader would refuse


def write_manifest(
    directory: str | Path,
    *,
    name: str,
    T: int,
    layers: list[tuple[str, str]],
    provenance: dict,
) -> Path:
    """Atomically write ``manifest.yaml``. ``layers`` is [(layer name, kind)] in forward order."""
    directory = Path(directory)
    man = {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "T": int(T),
        "provenance": {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **provenance},
        "layers": [{"name": n, "file": f"{n}.npz", "kind": k} for n, k in layers],
    }
    text = yaml.safe_dump(man, sort_keys=False).encode()
    path = directory / "manifest.yaml"
    write_file(path, text)
    Workload(directory)
    return path
