"""Building blocks shared by every network of the zoo.

Tensors inside a network are multi-step, ``[T, B, ...]`` (spikingjelly's ``step_mode='m'``). Convs and
BN fold T into the batch (LoAS's "temporal-parallel" execution), the LIF loops over T.

A *spike layer* (:class:`SpikeConv`, :class:`SpikeLinear`) is ``weight -> BN -> LIF -> n_mask``. Its
input is spikes (except the encoding layer, which sees the analog image once) and its output is spikes.
Each spike layer can switch to an *integer mode* (:meth:`SpikeConv.set_integer`) that computes exactly
the golden model's arithmetic (spec/loas.md section 7): int8 weights, integer bias, integer LIF with a
``>> 2`` decay and an integer threshold.
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
        """Weight and bias with BN (eval statistics) and the LIF's 0.75 input gain folded in."""
        w = self.op.weight.detach().double()
        bn = self.bn
        inv = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        b = bn.bias.detach().double() - bn.running_mean.double() * inv
        shape = (-1,) + (1,) * (w.dim() - 1)
        return INPUT_GAIN * w * inv.reshape(shape), INPUT_GAIN * b

    def quantize(self) -> QuantParams:
        """Compute int8 weights, integer bias and threshold (symmetric per-layer scale).

        The scale maps the largest folded weight magnitude to 127; bias and threshold are rounded in
        the same units, so pruned (zero) weights stay exactly zero.
        """
        w, b = self.folded()
        wmax = float(w.abs().max())
        scale = wmax / 127.0 if wmax > 0 else 1.0
        wq = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
        bq = torch.round(b / scale).to(torch.int64)
        th = max(1, int(round(V_TH / scale)))
        self.quant = QuantParams(wq, bq, th, scale)
        return self.quant

    def set_integer(self, on: bool = True) -> None:
        """Switch the integer mode on (quantising now from the current weights and BN) or off."""
        if on and self.encoding:
            raise ValueError("the encoding layer has analog input and has no integer mode")
        self.integer = bool(on)
        if on:
            self.quantize()

    def _int_current(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding:
            # Direct encoding: the analog image [B, ...] goes through conv+BN once; the current is
            # repeated for every timestep before the LIF.
            cur = self.bn(self.op(x))
            cur = cur.unsqueeze(0).expand(self.T, *cur.shape)
            return self.lif(cur.contiguous())
        if self.integer:
            O = self._int_current(x)
            s = integer_lif(O, self.quant.threshold)
        else:
            s = self.lif(seq_apply(lambda z: self.bn(self.op(z)), x))
        return apply_n_mask(s, self.n_mask)


class SpikeConv(_SpikeLayer):
    """Conv2d (no bias) -> BatchNorm2d -> LIF -> n_mask, on ``[T, B, C, H, W]``.

    Parameters
    ----------
    c_in, c_out, kernel, stride, padding : int
        Conv geometry.
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

    def __init__(self, c_in, c_out, kernel=3, stride=1, padding=1, *, n_mask=0, encoding=False):
        super().__init__(n_mask, encoding)
        self.op = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.T = 1

    def _int_current(self, x):
        q = self.quant
        # float64 holds every partial sum of binary inputs times int8 weights exactly (|sum| < 2^53).
        w = q.weight.to(torch.float64)
        xs = x.flatten(0, 1).to(torch.float64)
        o = F.conv2d(xs, w, None, self.op.stride, self.op.padding)
        o = o + q.bias.to(torch.float64).reshape(1, -1, 1, 1)
        return o.reshape(x.shape[0], x.shape[1], *o.shape[1:])


class SpikeLinear(_SpikeLayer):
    """Linear (no bias) -> BatchNorm1d -> LIF -> n_mask, on ``[T, B, F]`` (a hidden fc spike layer)."""

    def __init__(self, f_in, f_out, *, n_mask=0):
        super().__init__(n_mask, False)
        self.op = nn.Linear(f_in, f_out, bias=False)
        self.bn = nn.BatchNorm1d(f_out)

    def _int_current(self, x):
        q = self.quant
        o = x.to(torch.float64) @ q.weight.to(torch.float64).t() + q.bias.to(torch.float64)
        return o


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
