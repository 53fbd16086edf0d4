"""The model zoo: LoAS's VGG16, ResNet19 and AlexNet (CIFAR shapes) and the small default network.

Every network takes an analog image ``[B, C, H, W]``, encodes it directly (first conv + BN once, the
current repeated over T, then a LIF), runs its spike layers on ``[T, B, ...]`` and returns logits
averaged over T (``[B, classes]``); the per-timestep logits are kept in ``last_logits`` for a
per-t loss. Layer (module) names are ``conv1..convN`` and ``fc1..`` in forward order where the
architecture is a plain chain (spec/snn.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from spikingjelly.activation_based import functional

from .layers import (
    init_weights,
    INPUT_GAIN,
    ResidualBlock,
    SpikeConv,
    SpikeLinear,
    _SpikeLayer,
    check_n_mask,
    check_T,
    exact_float_dtype,
    seq_apply,
    spike_layers,
)


class SNN(nn.Module):
    """Base class: T, n_mask and integer-mode switches shared by every network of the zoo.

    Parameters
    ----------
    T : int
        Timesteps (positive).
    n_mask : int
        0, 1 or 2: after every LIF but the encoding one, zero neurons that fired exactly once
        (1) or once or twice (2).

    Raises
    ------
    ValueError
        If T is not a positive int or n_mask is not 0, 1 or 2.
    """

    def __init__(self, T: int = 4, n_mask: int = 0):
        super().__init__()
        self._T = check_T(T)
        self._n_mask = check_n_mask(n_mask)
        self.last_logits: torch.Tensor | None = None

    def _finish(self):
        """Push T and n_mask into the layers; call at the end of a subclass constructor."""
        self.T = self._T
        self.n_mask = self._n_mask

    @property
    def T(self) -> int:
        return self._T

    @T.setter
    def T(self, value: int) -> None:
        self._T = check_T(value)
        for _, m in spike_layers(self):
            m.T = self._T

    @property
    def n_mask(self) -> int:
        return self._n_mask

    @n_mask.setter
    def n_mask(self, value: int) -> None:
        self._n_mask = check_n_mask(value)
        for _, m in spike_layers(self):
            if not m.encoding:
                m.n_mask = self._n_mask

    def set_integer(self, on: bool = True) -> None:
        """Run every spike layer but the encoding one in the golden model's integer arithmetic.

        Layers that receive a residual are switched (and quantised) by their
        :class:`~models.layers.ResidualBlock`, which gives the layer and its shortcut one scale.
        """
        blocks = [m for m in self.modules() if isinstance(m, ResidualBlock)]
        targets = {id(b.target) for b in blocks}
        for _, m in spike_layers(self):
            if not m.encoding and id(m) not in targets:
                m.set_integer(on)
        for b in blocks:
            b.set_integer(on)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        out = self.features(x)
        self.last_logits = out
        return out.mean(0)


def _pool(kind: str, k: int):
    return nn.MaxPool2d(k) if kind == "max" else nn.AvgPool2d(k)


class ChainSNN(SNN):
    """A plain chain of named stages: spike layers, pools (``seq_apply``), flatten, classifier.

    ``stages`` is a list of ``(name, module)``; names are kept as module names so state dicts and layer
    names read ``conv1``, ``conv2``, ..., ``fc1``.
    """

    def __init__(self, stages, T=4, n_mask=0):
        super().__init__(T, n_mask)
        self.stages = nn.ModuleDict(stages)
        self._finish()

    def features(self, x):
        first = True
        for name, m in self.stages.items():
            if first:
                x = m(x)  # the encoding layer: [B, C, H, W] -> spikes [T, B, ...]
                first = False
            elif isinstance(m, _SpikeLayer):
                x = m(x)
            elif isinstance(m, nn.Flatten):
                x = x.flatten(2)
            else:
                x = seq_apply(m, x)
        return x


def default_net(T: int = 4, n_mask: int = 0, width: int = 16, in_ch: int = 1, classes: int = 10):
    """The small default network for 28x28 one-channel images (Fashion-MNIST), VGG style.

    conv1 (encoding) ``in_ch->w`` 28x28, maxpool -> 14; conv2 ``w->2w``; conv3 ``2w->2w``,
    maxpool -> 7; conv4 ``2w->4w``; conv5 ``4w->4w``, maxpool -> 3; fc1 ``4w*9 -> classes``.
    Spike layers run by LoAS: conv2..conv5. The pool right after the encoding layer keeps the
    spike layers at 14x14 and below, which is what makes CPU training affordable.
    """
    w = width
    stages = [
        ("conv1", SpikeConv(in_ch, w, encoding=True)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", SpikeConv(w, 2 * w, n_mask=n_mask)),
        ("conv3", SpikeConv(2 * w, 2 * w, n_mask=n_mask)),
        ("pool3", nn.MaxPool2d(2)),
        ("conv4", SpikeConv(2 * w, 4 * w, n_mask=n_mask)),
        ("conv5", SpikeConv(4 * w, 4 * w, n_mask=n_mask)),
        ("pool5", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(4 * w * 9, classes)),
    ]
    return ChainSNN(stages, T, n_mask)


VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

#: Variants of vgg16, resnet19 and alexnet: ``loas`` = the LoAS code's networks (layer lists, BN and
#: bias choices, pooling, initialisation), ``ours`` = the cleaner ones (BN everywhere, no conv bias,
#: torch's default initialisation, AlexNet's second max-pool, ResNet19's fc1 a spike layer).
VARIANTS = ("loas", "ours")
#: Zoo networks that have variants (the default network has one form).
VARIANT_ARCHS = ("vgg16", "resnet19", "alexnet")


def check_variant(variant) -> str:
    """Return ``variant`` if it is one of :data:`VARIANTS`; raise :class:`ValueError` otherwise."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


def _init_loas_vgg(model: nn.Module) -> None:
    """LoAS VGG._initialize_weights: convs Kaiming normal (fan_out, relu), BN 1/0, fc N(0, 0.01),
    biases 0."""
    init_weights(model, lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"))


def _init_loas_alexnet(model: nn.Module) -> None:
    """LoAS AlexNet.init_bias: every conv and linear weight N(0, 0.1), biases 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.1)
            nn.init.zeros_(m.bias)


def vgg16(T: int = 4, n_mask: int = 0, classes: int = 10, in_ch: int = 3, variant: str = "loas"):
    """LoAS VGG16 (cfg D with BN, 13 convs 3x3 pad 1, maxpool after conv2, 4, 7, 10, 13; fc 512->classes).

    ``variant='loas'``: biased convs before BN, Kaiming (fan_out) convs and N(0, 0.01) fc, as the
    LoAS code; ``'ours'``: convs without bias, torch's default initialisation.
    """
    loas = check_variant(variant) == "loas"
    stages, c, i = [], in_ch, 0
    for v in VGG16_CFG:
        if v == "M":
            stages.append((f"pool{i}", nn.MaxPool2d(2)))
        else:
            i += 1
            stages.append((f"conv{i}", SpikeConv(c, v, n_mask=n_mask, encoding=(i == 1), bias=loas)))
            c = v
    stages += [("flatten", nn.Flatten()), ("fc1", nn.Linear(512, classes))]
    net = ChainSNN(stages, T, n_mask)
    if loas:
        _init_loas_vgg(net)
    return net


def alexnet(T: int = 4, n_mask: int = 0, classes: int = 10, in_ch: int = 3, variant: str = "loas"):
    """LoAS AlexNet: conv1 3->64 k3 s2, maxpool, conv2 ->192, [maxpool], conv3 ->384, conv4 ->256,
    conv5 ->256, maxpool, adaptive avgpool 2x2, fc 1024->classes.

    ``variant='loas'`` is the LoAS code: no BN, biased convs, every weight N(0, 0.1), and the second
    max-pool dropped (its output is computed but not used), so conv3..5 run at 8x8. ``'ours'``: BN
    after every conv (no bias), torch's default initialisation, the second max-pool kept (4x4).
    """
    loas = check_variant(variant) == "loas"
    kw = dict(bias=loas, bn=not loas)
    stages = [
        ("conv1", SpikeConv(in_ch, 64, 3, 2, 1, encoding=True, **kw)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", SpikeConv(64, 192, n_mask=n_mask, **kw)),
    ]
    if not loas:
        stages.append(("pool2", nn.MaxPool2d(2)))
    stages += [
        ("conv3", SpikeConv(192, 384, n_mask=n_mask, **kw)),
        ("conv4", SpikeConv(384, 256, n_mask=n_mask, **kw)),
        ("conv5", SpikeConv(256, 256, n_mask=n_mask, **kw)),
        ("pool5", nn.MaxPool2d(2)),
        ("avgpool", nn.AdaptiveAvgPool2d((2, 2))),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(1024, classes)),
    ]
    net = ChainSNN(stages, T, n_mask)
    if loas:
        _init_loas_alexnet(net)
    return net


class BasicBlock(ResidualBlock):
    """Spiking BasicBlock: conv-BN-LIF, conv-BN, + shortcut (identity or 1x1 conv-BN), LIF.

    The second spike layer (``conv2``, the :attr:`target`) adds the shortcut current of the block
    input ``x`` to its own before its LIF: ``x`` itself (identity) or ``BN(conv1x1(x))``.

    Integer mode (:meth:`quantize`): conv2 and the shortcut are folded (BN, LIF input gain 0.75) and
    quantised with one scale ``s = max(max|w2'|, max|w_sc'|) / 127``, so conv2's current and the
    residual are integers of the same units: identity ``R = round(0.75 / s) * x``, shortcut conv
    ``R = b_sc + x W_sc`` (int8 ``W_sc``, integer ``b_sc``).
    """

    def __init__(self, c_in, c_out, stride, n_mask):
        super().__init__()
        self.conv1 = SpikeConv(c_in, c_out, 3, stride, 1, n_mask=n_mask)
        self.conv2 = SpikeConv(c_out, c_out, 3, 1, 1, n_mask=n_mask)
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        # Integer shortcut: (int8 weight, int64 bias) of the conv, or the int gain of the identity.
        self.res_weight: torch.Tensor | None = None
        self.res_bias: torch.Tensor | None = None
        self.res_gain: int | None = None

    @property
    def target(self) -> SpikeConv:
        return self.conv2

    def _folded_shortcut(self):
        """Shortcut conv weight and bias with BN (eval statistics) and the 0.75 gain folded in."""
        conv, bn = self.shortcut
        inv = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        w = conv.weight.detach().double() * inv.reshape(-1, 1, 1, 1)
        b = bn.bias.detach().double() - bn.running_mean.double() * inv
        return INPUT_GAIN * w, INPUT_GAIN * b

    def quantize(self):
        """Quantise conv2 and the shortcut with one scale (class docstring); returns conv2's
        :class:`~models.layers.QuantParams`."""
        w2, _ = self.conv2.folded()
        wmax = float(w2.abs().max())
        sc = self._folded_shortcut() if self.shortcut is not None else None
        if sc is not None:
            wmax = max(wmax, float(sc[0].abs().max()))
        scale = wmax / 127.0 if wmax > 0 else 1.0
        q = self.conv2.quantize(scale)
        if sc is None:
            self.res_weight = self.res_bias = None
            self.res_gain = int(round(INPUT_GAIN / scale))
        else:
            self.res_weight = torch.round(sc[0] / scale).clamp(-127, 127).to(torch.int8)
            self.res_bias = torch.round(sc[1] / scale).to(torch.int64)
            self.res_gain = None
        return q

    def float_residual(self, x):
        return x if self.shortcut is None else seq_apply(self.shortcut, x)

    def integer_residual(self, x):
        if self.res_weight is None and self.res_gain is None:
            self.quantize()
        if self.shortcut is None:
            return x.to(torch.int64) * self.res_gain
        conv = self.shortcut[0]
        dt = exact_float_dtype(self.res_weight[0].numel() * 127, x.device)
        o = F.conv2d(x.flatten(0, 1).to(dt), self.res_weight.to(dt), None, conv.stride, conv.padding)
        o = o.to(torch.int64) + self.res_bias.reshape(1, -1, 1, 1)
        return o.reshape(x.shape[0], x.shape[1], *o.shape[1:])

    def forward(self, x):
        return self.conv2(self.conv1(x), residual=self.residual(x))


class ResNet19(SNN):
    """LoAS ResNet19: conv1 3->64, BasicBlocks 3x128 (stride 2), 3x256 (s2), 2x512 (s2), avgpool,
    fc1 512->256, fc2 256->classes.

    ``width`` scales every layer (64 = LoAS; conv1 ->w, blocks 2w, 4w, 8w, fc1 8w->4w).
    ``variant='loas'`` is the LoAS code: fc1 is a plain biased linear layer on the averaged spike
    map and its LIF is never applied (fc2 sees fc1's analog output); the three 1x1 shortcut convs
    are exported as layers of their own (``loas export``). ``'ours'``: fc1 is a spike layer (BN,
    LIF, n_mask) that takes the last block's spike map and averages it itself
    (:class:`~models.layers.SpikeLinear` with ``pool``), so its integer mode sees spikes; ``image``
    is the input side it is built for (32: a 4x4 map). Both: torch's default initialisation (the
    LoAS ResNet has no initialisation of its own).
    """

    def __init__(self, T=4, n_mask=0, classes=10, in_ch=3, width=64, image=32, variant="loas"):
        super().__init__(T, n_mask)
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, got {width!r}")
        self.variant = check_variant(variant)
        self.conv1 = SpikeConv(in_ch, width, encoding=True)
        blocks, c, side = [], width, image
        for mult, n, stride in ((2, 3, 2), (4, 3, 2), (8, 2, 2)):
            for j in range(n):
                blocks.append(BasicBlock(c, mult * width, stride if j == 0 else 1, n_mask))
                c = mult * width
            side = (side - 1) // stride + 1  # 3x3, pad 1, stride 2
        self.blocks = nn.Sequential(*blocks)
        if self.variant == "loas":
            self.fc1 = nn.Linear(8 * width, 4 * width)
        else:
            self.fc1 = SpikeLinear(8 * width, 4 * width, n_mask=n_mask, pool=side * side)
        self.fc2 = nn.Linear(4 * width, classes)
        self._finish()

    def features(self, x):
        x = self.conv1(x)
        for b in self.blocks:
            x = b(x)
        if self.variant == "loas":  # avgpool, fc1, no LIF: fc2 sees fc1's analog output
            x = seq_apply(lambda z: self.fc1(F.adaptive_avg_pool2d(z, 1).flatten(1)), x)
        else:
            x = self.fc1(x)  # averages the spike map itself
        return seq_apply(self.fc2, x)


def resnet19(T: int = 4, n_mask: int = 0, classes: int = 10, in_ch: int = 3, width: int = 64,
             image: int = 32, variant: str = "loas"):
    """See :class:`ResNet19`."""
    return ResNet19(T, n_mask, classes, in_ch, width, image, variant)


#: name -> (constructor, input shape [C, H, W]) of every network in the zoo.
ZOO = {
    "default": (default_net, (1, 28, 28)),
    "vgg16": (vgg16, (3, 32, 32)),
    "resnet19": (resnet19, (3, 32, 32)),
    "alexnet": (alexnet, (3, 32, 32)),
}


def build(name: str, **kwargs) -> SNN:
    """Build zoo network ``name`` with keyword arguments of its constructor.

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    """
    if name not in ZOO:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(ZOO)}")
    return ZOO[name][0](**kwargs)


@dataclass(frozen=True)
class GemmLayer:
    """One spike GEMM layer LoAS runs: a conv on input spikes ``[c_in, H, W]``.

    ``M = Ho * Wo`` output pixels, ``K = c_in * kernel**2``, ``N = c_out`` (:attr:`mkn`).
    """

    name: str
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int
    H: int
    W: int

    @property
    def mkn(self) -> tuple[int, int, int]:
        ho = (self.H + 2 * self.padding - self.kernel) // self.stride + 1
        wo = (self.W + 2 * self.padding - self.kernel) // self.stride + 1
        return ho * wo, self.c_in * self.kernel * self.kernel, self.c_out


def gemm_layers(arch: str, variant: str = "loas", *, width: int | None = None,
                image: int | None = None) -> list[GemmLayer]:
    """The spike GEMM layers of zoo network ``arch`` in forward order, as ``loas export`` writes them
    (names included): every conv whose input is spikes, the encoding conv excluded (LoAS does not
    run it) -- pure arithmetic, no network is built.

    vgg16: conv2..conv13. alexnet: conv2..conv5 (``loas``: conv3..5 at 8x8; ``ours``: 4x4).
    resnet19 (``width`` 64 by default): ``blocks_<i>_conv1``, ``blocks_<i>_conv2`` (i = 0..7), and
    for ``loas`` the three 1x1 stride-2 ``blocks_<i>_shortcut`` (i = 0, 3, 6) after their block's
    conv2 (19 layers), for ``ours`` ``fc1`` as a conv whose kernel covers the 4x4 map (17).
    default (``width`` 16, 28x28): conv2..conv5; ``variant`` is ignored.

    Raises
    ------
    ValueError
        For an unknown architecture or variant.
    """
    if arch == "default":
        w, side = width or 16, image or 28
        s2 = side // 2
        return [GemmLayer("conv2", w, 2 * w, 3, 1, 1, s2, s2), GemmLayer("conv3", 2 * w, 2 * w, 3, 1, 1, s2, s2),
                GemmLayer("conv4", 2 * w, 4 * w, 3, 1, 1, s2 // 2, s2 // 2),
                GemmLayer("conv5", 4 * w, 4 * w, 3, 1, 1, s2 // 2, s2 // 2)]
    if arch not in VARIANT_ARCHS:
        raise ValueError(f"unknown model {arch!r}; known: default, {', '.join(VARIANT_ARCHS)}")
    loas = check_variant(variant) == "loas"
    side = image or 32
    out: list[GemmLayer] = []
    if arch == "vgg16":
        c, i = 3, 0
        for v in VGG16_CFG:
            if v == "M":
                side //= 2
                continue
            i += 1
            if i > 1:
                out.append(GemmLayer(f"conv{i}", c, v, 3, 1, 1, side, side))
            c = v
        return out
    if arch == "alexnet":
        s = (side + 1) // 2 // 2  # conv1 k3 s2 p1, maxpool 2
        out.append(GemmLayer("conv2", 64, 192, 3, 1, 1, s, s))
        if not loas:
            s //= 2
        for i, (ci, co) in enumerate(((192, 384), (384, 256), (256, 256)), start=3):
            out.append(GemmLayer(f"conv{i}", ci, co, 3, 1, 1, s, s))
        return out
    w = width or 64
    c, s, b = w, side, 0
    for mult, n, stride in ((2, 3, 2), (4, 3, 2), (8, 2, 2)):
        for j in range(n):
            st = stride if j == 0 else 1
            co = mult * w
            so = (s - 1) // st + 1
            out.append(GemmLayer(f"blocks_{b}_conv1", c, co, 3, st, 1, s, s))
            out.append(GemmLayer(f"blocks_{b}_conv2", co, co, 3, 1, 1, so, so))
            if loas and (st != 1 or c != co):
                out.append(GemmLayer(f"blocks_{b}_shortcut", c, co, 1, st, 0, s, s))
            c, s, b = co, so, b + 1
    if not loas:
        out.append(GemmLayer("fc1", c, 4 * w, s, 1, 0, s, s))
    return out


def gemm_shapes(model: SNN, input_shape) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of every conv (im2col: M output pixels, K = C_in*k*k, N = C_out), by module name.

    Runs one sample at T=1 through the network with forward hooks; shortcut convs are included under
    their module names.
    """
    shapes: dict[str, tuple[int, int, int]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):

            def hook(mod, inp, out, name=name):
                k = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1]
                shapes[name.removeprefix("stages.").removesuffix(".op")] = (
                    out.shape[-2] * out.shape[-1], k, mod.out_channels)

            hooks.append(m.register_forward_hook(hook))
    T = model.T
    was_training = model.training
    try:
        model.T = 1
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.T = T
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes
