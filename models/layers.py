"""Building blocks shared by every network of the zoo.

Tensors inside a network are multi-step, ``[T, B, ...]`` (spikingjelly's ``step_mode='m'``). Convs and
BN fold T into the batch (LoAS's "temporal-parallel" execution), the LIF loops over T.

A *spike layer* (:class:`SpikeConv`, :class:`SpikeLinear`) is ``weight -> BN -> LIF -> n_mask``. Its
input is spikes (except the encoding layer, which sees the analog image once) and its output is spikes.
Each spike layer can switch to an *integer mode* (:meth:`SpikeConv.set_integer`) that computes exactly
the golden model's arithmetic (spec/loas.md section 7): int8 weights, integer bias, integer LIF with a
``>> 2`` decay and an integer threshold. A spike layer may also receive a *residual* input current
(``layer(x, residual=r)``), added to its own current before the LIF: a ResNet block's shortcut
(:class:`ResidualBlock`), float in float mode, int64 in the layer's integer units in integer mode.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

# spikingjelly logs a Triton warning on import; it is irrelevant on CPU.
logging.getLogger("torch._library.triton").setLevel(logging.ERROR)

from spikingjelly.activation_based import neuron, surrogate  # noqa: E402

#: LIF time constant of every LoAS network: the charge V <- 0.25*V + 0.75*X.
TAU = 4.0 / 3.0
#: Multiplier applied to the input current by a spikingjelly LIF with tau 4/3 and decay_input.
INPUT_GAIN = 1.0 / TAU
V_TH = 1.0


def check_n_mask(n_mask) -> int:
    """Return ``n_mask`` if it is 0, 1 or 2; raise :class:`ValueError` showing the value otherwise."""
    if isinstance(n_mask, bool) or n_mask not in (0, 1, 2):
        raise ValueError(f"n_mask must be 0, 1 or 2, got {n_mask!r}")
    return int(n_mask)


def check_T(T) -> int:
    """Return ``T`` if it is a positive int, raise :class:`ValueError` otherwise."""
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    return T


def make_lif() -> neuron.LIFNode:
    """The LoAS LIF: tau 4/3, v_th 1, hard reset to 0, decay_input, ATan surrogate, multi-step."""
    return neuron.LIFNode(
        tau=TAU,
        decay_input=True,
        v_threshold=V_TH,
        v_reset=0.0,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
        step_mode="m",
    )


def _fusable(m) -> bool:
    """A multi-step, hard-reset, decay-input spikingjelly LIF (what :func:`make_lif` builds)."""
    return (isinstance(m, neuron.LIFNode) and m.step_mode == "m" and m.decay_input and m.v_reset is not None
            and not m.store_v_seq and getattr(m, "_neuron_precision", None) is None)


def _fused_lif_forward(self, x_seq: torch.Tensor) -> torch.Tensor:
    """The LIF of :func:`make_lif` on ``[T, ...]`` without autograd, in place on one membrane tensor.

    The same float operations as spikingjelly's reference (``h = v + (x - (v - v_reset)) / tau``,
    spike ``h - v_th >= 0``, i.e. ``h >= v_th`` exactly, hard reset ``h -> v_reset`` where it
    fired), so spikes and membranes are identical; it skips the surrogate's autograd function and
    the per-step temporaries and bool masks. Falls back to spikingjelly when gradients are wanted.
    """
    if torch.is_grad_enabled() and x_seq.requires_grad:
        return type(self).forward(self, x_seq)
    v = self.v
    reset = float(self.v_reset)
    if not isinstance(v, torch.Tensor) or v.shape != x_seq.shape[1:]:
        v = torch.full_like(x_seq[0], reset)
    elif v is not getattr(self, "_fused_v", None):  # not ours: do not change it in place
        v = v.clone()
    out = torch.empty_like(x_seq)
    d = torch.empty_like(v)
    for t in range(x_seq.shape[0]):
        torch.sub(x_seq[t], v if reset == 0.0 else v - reset, out=d)  # v - 0.0 == v
        d.div_(self.tau)
        v.add_(d)
        s = torch.ge(v, self.v_threshold, out=out[t])  # 0/1 floats (a bool mask is several times slower)
        v.addcmul_(v, s, value=-1.0)  # v - v = 0 where it fired, v - 0 = v elsewhere
        if reset != 0.0:
            v.add_(s, alpha=reset)
    self.v = v
    object.__setattr__(self, "_fused_v", v)
    return out


class fused_lifs:
    """Context manager: every LoAS LIF of ``model`` (:func:`make_lif`) runs :func:`_fused_lif_forward`
    while no gradient is recorded; forward hooks still see each call. Restored on exit."""

    def __init__(self, model: nn.Module):
        self.lifs = [m for m in model.modules() if _fusable(m)]

    def __enter__(self):
        for m in self.lifs:
            object.__setattr__(m, "forward", _fused_lif_forward.__get__(m))
        return self

    def __exit__(self, *exc):
        for m in self.lifs:
            for a in ("forward", "_fused_v"):
                m.__dict__.pop(a, None)


def apply_n_mask(spikes: torch.Tensor, n_mask: int) -> torch.Tensor:
    """Zero all T spikes of neurons that fired exactly 1 (n_mask >= 1) or 2 (n_mask == 2) times.

    ``spikes`` is ``[T, ...]``. Multiplying by a 0/1 mask (rather than indexing) keeps the surrogate
    gradient flowing through the surviving spikes, so fine-tuning can learn with the mask.
    """
    if n_mask == 0:
        return spikes
    count = spikes.detach().sum(dim=0, keepdim=True)
    keep = count > n_mask
    keep = keep | (count == 0)
    return spikes * keep.to(spikes.dtype)


def seq_apply(fn, x: torch.Tensor) -> torch.Tensor:
    """Apply a single-step module to ``[T, B, ...]`` by folding T into the batch."""
    T, B = x.shape[:2]
    y = fn(x.flatten(0, 1))
    return y.reshape(T, B, *y.shape[1:])


def exact_float_dtype(bound: int, device) -> torch.dtype:
    """The float dtype in which a product of integer operands is exact when every partial sum stays
    within ``bound`` in magnitude.

    float32 holds every integer up to 2**24, so BLAS and oneDNN sums of such products are exact
    whatever their order; it is several times faster than float64 (which torch's CPU conv runs
    through a slow generic path). Off the CPU float64 is kept: CUDA may run float32 convs and matmuls
    in TF32 (10-bit mantissa) or with Winograd transforms, which are not exact.
    """
    if torch.device(device).type == "cpu" and bound < 2**24:
        return torch.float32
    return torch.float64


def integer_lif(O: torch.Tensor, threshold: int) -> torch.Tensor:
    """Integer LIF of the golden model over dim 0: ``X = O[t] + U; C = X >= th; U = 0 if C else X >> 2``.

    ``O`` holds integers (any integer or float64 dtype holding exact integers); the result is a 0/1
    tensor of the same shape and dtype float32.
    """
    O = O.to(torch.int64)
    U = torch.zeros_like(O[0])
    out = torch.empty(O.shape, dtype=torch.float32, device=O.device)
    for t in range(O.shape[0]):
        X = O[t] + U
        fired = X >= threshold
        out[t] = fired.to(torch.float32)
        # floor division by 4 is the arithmetic shift ">> 2" (floor toward -inf) on negative values too.
        U = torch.where(fired, torch.zeros_like(X), torch.div(X, 4, rounding_mode="floor"))
    return out


class QuantParams:
    """Integer parameters of one spike layer (the numbers that go into a trace).

    Attributes
    ----------
    weight : torch.Tensor
        int8 weights, shape of the float weight (``[C_out, C_in, k, k]`` or ``[N, K]``); 0 = pruned.
    bias : torch.Tensor
        int64 bias per output channel, added once per timestep.
    threshold : int
        Integer firing threshold.
    scale : float
        Value of one integer unit in the float model's membrane units.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, threshold: int, scale: float):
        self.weight = weight
        self.bias = bias
        self.threshold = int(threshold)
        self.scale = float(scale)


class _SpikeLayer(nn.Module):
    """Shared part of :class:`SpikeConv` and :class:`SpikeLinear` (BN folding, quantisation, modes)."""

    op: nn.Module
    bn: nn.Module

    def __init__(self, n_mask: int, encoding: bool):
        super().__init__()
        self.n_mask = check_n_mask(n_mask)
        self.encoding = bool(encoding)
        self.lif = make_lif()
        self.quant: QuantParams | None = None
        self.integer = False

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias with the op's bias, BN (eval statistics, when the layer has one) and the
        LIF's 0.75 input gain folded in."""
        w = self.op.weight.detach().double()
        c = self.op.bias.detach().double() if self.op.bias is not None else torch.zeros(
            w.shape[0], dtype=torch.float64)
        bn = self.bn
        if isinstance(bn, nn.Identity):  # no BN (LoAS's AlexNet)
            inv, b = torch.ones_like(c), c
        else:
            inv = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
            b = bn.bias.detach().double() + (c - bn.running_mean.double()) * inv
        shape = (-1,) + (1,) * (w.dim() - 1)
        return INPUT_GAIN * w * inv.reshape(shape), INPUT_GAIN * b

    def quantize(self, scale: float | None = None) -> QuantParams:
        """Compute int8 weights, integer bias and threshold (symmetric per-layer scale).

        The scale maps the largest folded weight magnitude to 127; bias and threshold are rounded in
        the same units, so pruned (zero) weights stay exactly zero.

        Parameters
        ----------
        scale : float, optional
            Use this scale instead (a residual block shares one scale between this layer and its
            shortcut). It must be positive and at least max|folded weight| / 127.

        Raises
        ------
        ValueError
            If ``scale`` is not positive or would push a weight beyond the int8 range.
        """
        w, b = self.folded()
        wmax = float(w.abs().max())
        if scale is None:
            scale = wmax / 127.0 if wmax > 0 else 1.0
        elif not scale > 0 or round(wmax / scale) > 127:
            raise ValueError(f"quantisation scale {scale!r} does not hold the largest weight {wmax} in int8")
        wq = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        bq = torch.round(b / scale).to(torch.int64)
        th = max(1, int(round(V_TH / scale)))
        self.quant = QuantParams(wq, bq, th, scale)
        return self.quant

    def set_integer(self, on: bool = True, scale: float | None = None) -> None:
        """Switch the integer mode on (quantising now from the current weights and BN, with
        ``scale`` if given, see :meth:`quantize`) or off.

        Raises
        ------
        ValueError
            For the encoding layer (analog input), or a ``scale`` :meth:`quantize` refuses.
        """
        if on and self.encoding:
            raise ValueError("the encoding layer has analog input and has no integer mode")
        self.integer = bool(on)
        if on:
            self.quantize(scale)

    def _int_current(self, x: torch.Tensor) -> torch.Tensor:
        """Integer current O = b + x W of spikes ``x`` ``[T, B, ...]``: int64 ``[T, B, ...]``."""
        raise NotImplementedError

    def _float_current(self, x: torch.Tensor) -> torch.Tensor:
        return seq_apply(lambda z: self.bn(self.op(z)), x)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """Spikes ``[T, B, ...]`` -> spikes. ``residual`` (optional, broadcastable to the layer's
        current ``[T, B, ...]``) is added to the current before the LIF: a float current in float
        mode (like the BN output, before the LIF's input gain), an int64 current in this layer's
        integer units in integer mode.

        Raises
        ------
        TypeError
            In integer mode, for a residual that is not int64 (a float current would silently
            leave the integer arithmetic).
        """
        if self.encoding:
            # Direct encoding: the analog image [B, ...] goes through conv+BN once; the current is
            # repeated for every timestep before the LIF.
            cur = self.bn(self.op(x))
            cur = cur.unsqueeze(0).expand(self.T, *cur.shape)
            return self.lif(cur.contiguous())
        if self.integer:
            O = self._int_current(x)
            if residual is not None:
                if residual.dtype != torch.int64:
                    raise TypeError(f"integer mode: residual must be int64 (integer units), got {residual.dtype}")
                O = O + residual
            s = integer_lif(O, self.quant.threshold)
        else:
            cur = self._float_current(x)
            s = self.lif(cur if residual is None else cur + residual)
        return apply_n_mask(s, self.n_mask)


class SpikeConv(_SpikeLayer):
    """Conv2d (no bias by default) -> BatchNorm2d (optional) -> LIF -> n_mask, on ``[T, B, C, H, W]``.

    Parameters
    ----------
    c_in, c_out, kernel, stride, padding : int
        Conv geometry.
    bias : bool
        Give the conv a bias (LoAS's VGG16 and AlexNet); the integer model folds it into its bias.
    bn : bool
        Follow the conv with a BatchNorm2d (False: LoAS's AlexNet).
    n_mask : int
        0, 1 or 2 (:func:`apply_n_mask`); ignored for the encoding layer.
    encoding : bool
        True for the first layer (direct encoding): input is the analog image ``[B, C, H, W]`` and T
        must be set by the owning network (attribute ``T``).

    Raises
    ------
    ValueError
        If ``n_mask`` is not 0, 1 or 2.
    """

    def __init__(self, c_in, c_out, kernel=3, stride=1, padding=1, *, n_mask=0, encoding=False,
                 bias=False, bn=True):
        super().__init__(n_mask, encoding)
        self.op = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=bool(bias))
        self.bn = nn.BatchNorm2d(c_out) if bn else nn.Identity()
        self.T = 1

    def _int_current(self, x):
        q = self.quant
        # Binary inputs times int8 weights: every partial sum is an integer of magnitude <= K * 127,
        # exact in the float dtype chosen for that bound; the bias is added in int64.
        k = q.weight[0].numel()
        dt = exact_float_dtype(k * 127, x.device)
        o = F.conv2d(x.flatten(0, 1).to(dt), q.weight.to(dt), None, self.op.stride, self.op.padding)
        o = o.to(torch.int64) + q.bias.reshape(1, -1, 1, 1)
        return o.reshape(x.shape[0], x.shape[1], *o.shape[1:])


class SpikeLinear(_SpikeLayer):
    """Linear (no bias) -> BatchNorm1d -> LIF -> n_mask, on ``[T, B, F]`` (a hidden fc spike layer),
    or global average pool -> Linear -> BatchNorm1d -> LIF -> n_mask on spike maps ``[T, B, F, H, W]``.

    Parameters
    ----------
    f_in, f_out : int
        Features (channels of the map when pooled).
    n_mask : int
        0, 1 or 2 (:func:`apply_n_mask`).
    pool : int
        H * W of the spike map the layer averages in integer mode (1: the input is ``[T, B, F]``).
        The average of binary spikes is not binary, so the integer mode folds the 1/pool into the
        weights instead: ``O = b + sum over (f, h, w) of x[f, h, w] * W[n, f]``, exactly the
        golden model's GEMM of a conv whose kernel covers the whole map (how export writes it).
        The float mode averages any map size.

    Raises
    ------
    ValueError
        If ``n_mask`` is not 0, 1 or 2 or ``pool`` is not a positive int.
    """

    def __init__(self, f_in, f_out, *, n_mask=0, pool: int = 1):
        super().__init__(n_mask, False)
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ValueError(f"pool must be a positive int, got {pool!r}")
        self.op = nn.Linear(f_in, f_out, bias=False)
        self.bn = nn.BatchNorm1d(f_out)
        self.pool = pool

    def folded(self):
        w, b = super().folded()
        # Each spike of the map carries 1/pool of the weight (the average is a sum divided by pool).
        return w / self.pool, b

    def _float_current(self, x):
        if x.dim() == 5:
            x = seq_apply(lambda z: F.adaptive_avg_pool2d(z, 1).flatten(1), x)
        return super()._float_current(x)

    def _int_current(self, x):
        q = self.quant
        area = x.shape[-2] * x.shape[-1] if x.dim() == 5 else 1
        if area != self.pool:
            raise ValueError(f"integer mode of this layer was built for a {self.pool}-pixel map "
                             f"(pool), got input {tuple(x.shape)}")
        if x.dim() == 5:
            x = x.sum((-2, -1))  # spike counts 0..pool per feature and timestep
        dt = exact_float_dtype(q.weight.shape[1] * 127 * self.pool, x.device)
        o = x.to(dt) @ q.weight.to(dt).t()
        return o.to(torch.int64) + q.bias


class ResidualBlock(nn.Module):
    """A block whose last spike layer (:attr:`target`) also receives a shortcut current computed from
    the block's input spikes (a ResNet BasicBlock).

    Subclasses define ``target``, :meth:`quantize` (the target's and the shortcut's integer
    parameters, in one scale), :meth:`float_residual` and :meth:`integer_residual`. In integer mode
    the target's input current and the residual are then integers of the same units, so the whole
    block is the golden model's arithmetic with a residual input (``sim.golden.run_layer``).
    """

    target: _SpikeLayer

    def __init__(self):
        super().__init__()
        self.integer = False

    def quantize(self) -> QuantParams:
        raise NotImplementedError

    def float_residual(self, x: torch.Tensor) -> torch.Tensor:
        """Shortcut current of block input spikes ``x`` in float mode (before the LIF's input gain)."""
        raise NotImplementedError

    def integer_residual(self, x: torch.Tensor) -> torch.Tensor:
        """Shortcut current of block input spikes ``x``: int64, in the target's integer units."""
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut current in the current mode (what :attr:`target` adds to its own)."""
        return self.integer_residual(x) if self.integer else self.float_residual(x)

    def set_integer(self, on: bool = True) -> None:
        """Switch the block (target layer and shortcut) to integer mode, quantising now, or back."""
        self.integer = bool(on)
        if on:
            self.quantize()
        self.target.integer = bool(on)


def spike_layers(model: nn.Module) -> list[tuple[str, _SpikeLayer]]:
    """The spike layers of ``model`` in forward (registration) order, encoding layer included."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _SpikeLayer)]


def prunable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every conv and linear weight (first conv and classifier included; BN and biases excluded)."""
    return [
        (f"{n}.weight", m.weight)
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]


def init_weights(model: nn.Module, conv_init) -> None:
    """The initialisation LoAS's VGG and the official SNASNet share: ``conv_init(weight)`` for convs,
    BN weight 1 and bias 0, Linear weights N(0, 0.01), every bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            conv_init(m.weight)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) and m.bias is not None:
            nn.init.zeros_(m.bias)
