"""Networks for ordinal classification that expose their penultimate features.

Every model is an :class:`OrdinalModel`: a feature extractor ``features(x) -> (N, F)`` whose
output is non-negative (it ends in a ReLU, so the learned ground distance of
:mod:`emdloss.ground` can L1-normalise it), and a linear ``head`` mapping features to
``num_outputs`` scores; ``forward(x) = head(features(x))``.

Models (:data:`MODEL_NAMES`):

- ``"mlp"`` for tables (any input shape, flattened),
- ``"cnn"`` a small, fast CNN for 28 px images (any side >= 4),
- torchvision backbones by name. For inputs of side <= 64 (MedMNIST, CIFAR) they get a stem that
  suits small images, as in CIFAR ResNets and the MedMNIST baselines: ResNets a 3x3 stride-1 first
  convolution and no max-pool; EfficientNet/MobileNet a stride-1 first convolution; VGG drops its
  last max-pool and pools to 1x1 before fc6.

Pretrained ImageNet weights are read only from the local torch cache
(``torch.hub.get_dir()/checkpoints``); nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

__all__ = [
    "MODEL_NAMES",
    "SMALL_INPUT_SIDE",
    "OrdinalEnsemble",
    "OrdinalModel",
    "build_model",
    "fold_fc6",
    "members_of",
    "pretrained_weights_path",
]

# Inputs whose smaller side is at most this get the small-input stem.
SMALL_INPUT_SIDE = 64

_TORCHVISION_NAMES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "vgg16",
    "vgg16_bn",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
)
MODEL_NAMES: tuple[str, ...] = ("mlp", "cnn", *_TORCHVISION_NAMES)


class OrdinalModel(nn.Module):
    """A feature extractor followed by a linear head.

    Parameters
    ----------
    body : nn.Module
        Maps inputs to non-negative features ``(N, feature_dim)``.
    feature_dim : int
        ``F``, the width of the features.
    num_outputs : int
        Outputs of the head (``C`` classes, or fewer for threshold models).
    name : str
        The model's name in :data:`MODEL_NAMES` (kept for run records).

    Attributes
    ----------
    head : nn.Linear
        ``Linear(feature_dim, num_outputs)``.

    Examples
    --------
    >>> model = OrdinalModel(nn.Sequential(nn.Linear(3, 4), nn.ReLU()), 4, 2)
    >>> model(torch.zeros(5, 3)).shape
    torch.Size([5, 2])
    """

    def __init__(self, body: nn.Module, feature_dim: int, num_outputs: int, name: str = "") -> None:
        super().__init__()
        self.body = body
        self.feature_dim = feature_dim
        self.num_outputs = num_outputs
        self.name = name
        self.head = nn.Linear(feature_dim, num_outputs)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(N, feature_dim)``, non-negative."""
        out: Tensor = self.body(x)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Scores (logits) ``(N, num_outputs)``."""
        out: Tensor = self.head(self.features(x))
        return out


class OrdinalEnsemble(nn.Module):
    """Several networks side by side, each with its own weights (a deep ensemble).

    The members see the same inputs and return their outputs stacked along a new dimension 1;
    whoever turns outputs into probabilities averages the members' probabilities
    (:meth:`emdloss.training.module.OrdinalTask.probabilities`), and training applies the loss
    to each member on its own, so the members learn independently of one another (the sum of
    their losses has each member's own gradient).

    Parameters
    ----------
    members : sequence of nn.Module
        Two or more networks with the same outputs (:class:`OrdinalModel`, each freshly
        initialised: their different starting points are what makes them differ).

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> ensemble = OrdinalEnsemble([build_model("mlp", num_outputs=3, input_shape=(4,))
    ...                             for _ in range(2)])
    >>> ensemble(torch.zeros(5, 4)).shape
    torch.Size([5, 2, 3])
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        """The members' outputs ``(N, K, num_outputs)``, member ``k`` at ``[:, k]``."""
        return torch.stack([member(x) for member in self.members], dim=1)


def members_of(model: nn.Module) -> list[nn.Module]:
    """The networks of ``model``: an ensemble's members, or the model alone.

    Examples
    --------
    >>> net = build_model("mlp", num_outputs=3, input_shape=(4,))
    >>> members_of(net) == [net]
    True
    >>> len(members_of(OrdinalEnsemble([net, build_model("mlp", num_outputs=3, input_shape=(4,))])))
    2
    """
    return list(getattr(model, "members", [model]))


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------
def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if not shape or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape
    ):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape!r}")
    return shape


def _image_shape(name: str, shape: tuple[int, ...], min_side: int) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ValueError(
            f"model {name!r} takes images: input_shape must be (channels, height, width), "
            f"got {shape!r}"
        )
    c, h, w = shape
    if min(h, w) < min_side:
        raise ValueError(f"model {name!r} needs images of side >= {min_side}, got {h}x{w}")
    return c, h, w


def _no_extra(name: str, kwargs: dict[str, Any], allowed: Sequence[str]) -> None:
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        raise TypeError(
            f"model {name!r} got unexpected options {extra}; it accepts {sorted(allowed) or 'none'}"
        )


# --------------------------------------------------------------------------------------------
# mlp and cnn
# --------------------------------------------------------------------------------------------
def _mlp(
    shape: tuple[int, ...],
    num_outputs: int,
    *,
    hidden_sizes: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    batchnorm: bool = False,
) -> OrdinalModel:
    sizes = [_positive_int(h, "hidden_sizes entries") for h in hidden_sizes]
    if not sizes:
        raise ValueError("hidden_sizes must name at least one hidden layer (the features)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(shape)
    for h in sizes:
        layers.append(nn.Linear(width, h, bias=not batchnorm))  # BN has its own bias
        if batchnorm:
            layers.append(nn.BatchNorm1d(h))
        layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))  # after the ReLU: features stay non-negative
        width = h
    return OrdinalModel(nn.Sequential(*layers), width, num_outputs, "mlp")


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


def _cnn(
    shape: tuple[int, ...], num_outputs: int, *, width: int = 16, dropout: float = 0.0
) -> OrdinalModel:
    c, _, _ = _image_shape("cnn", shape, 4)
    w = _positive_int(width, "width")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    # Three conv-BN-ReLU stages (w, 2w, 4w channels), two 2x2 max-pools, global average pool.
    layers: list[nn.Module] = [
        *_conv_bn_relu(c, w),
        nn.MaxPool2d(2),
        *_conv_bn_relu(w, 2 * w),
        nn.MaxPool2d(2),
        *_conv_bn_relu(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return OrdinalModel(nn.Sequential(*layers), 4 * w, num_outputs, "cnn")


# --------------------------------------------------------------------------------------------
# torchvision backbones
# --------------------------------------------------------------------------------------------
def pretrained_weights_path(name: str) -> tuple[Path, str]:
    """Where torchvision keeps the default ImageNet weights of ``name`` in the local cache.

    Parameters
    ----------
    name : str
        A torchvision backbone of :data:`MODEL_NAMES`.

    Returns
    -------
    (Path, str)
        The cache file ``torch.hub.get_dir()/checkpoints/<file>`` (``TORCH_HOME`` moves it) and the
        official URL of the weights.

    Examples
    --------
    >>> path, url = pretrained_weights_path("resnet18")
    >>> path.name, url.startswith("https://download.pytorch.org/")
    ('resnet18-f37072fd.pth', True)
    """
    if name not in _TORCHVISION_NAMES:
        raise ValueError(
            f"no pretrained weights for model {name!r}; torchvision backbones: "
            f"{', '.join(_TORCHVISION_NAMES)}"
        )
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    url: str = weights.url
    filename = os.path.basename(urlparse(url).path)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, url


def _load_cached_state_dict(name: str) -> dict[str, Tensor]:
    path, url = pretrained_weights_path(name)
    # Check before torchvision sees it: its loader would download a missing file.
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for {name!r} not found at {path}; nothing is downloaded. "
            f"Copy the file there (download it from {url} on a machine with internet, or run "
            f"`python -c \"import torchvision; torchvision.models.get_model('{name}', "
            f"weights='DEFAULT')\"` there and copy {path.name} from its torch cache), "
            "or point TORCH_HOME at a directory whose hub/checkpoints holds it"
        )
    state: dict[str, Tensor] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def _adapt_first_conv(
    conv: nn.Conv2d,
    in_channels: int,
    *,
    pretrained: bool,
    kernel_size: int | None = None,
    stride: int | None = None,
) -> nn.Conv2d:
    """A copy of ``conv`` for ``in_channels`` inputs, optionally with a new kernel and stride.

    A new kernel size means a freshly initialised convolution. Otherwise pretrained weights are
    kept: summed over RGB for one channel, else repeated over the channels and rescaled by
    ``3 / in_channels`` (the response to a grey input is unchanged).
    """
    k = conv.kernel_size[0] if kernel_size is None else kernel_size
    s = conv.stride[0] if stride is None else stride
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=k,
        stride=s,
        padding=k // 2,
        bias=conv.bias is not None,
    )
    if kernel_size is None and pretrained:
        with torch.no_grad():
            w = conv.weight
            if in_channels == w.shape[1]:
                new.weight.copy_(w)
            elif in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:
                idx = torch.arange(in_channels) % w.shape[1]
                new.weight.copy_(w[:, idx] * (w.shape[1] / in_channels))
            if conv.bias is not None and new.bias is not None:
                new.bias.copy_(conv.bias)
    return new


def fold_fc6(fc6: nn.Linear, channels: int) -> nn.Linear:
    """VGG's fc6 for a 1x1 pooled map: the weights summed over their spatial grid.

    With the map pooled to 1x1 instead of replicated to the 7x7 grid torchvision's
    ``AdaptiveAvgPool2d((7, 7))`` makes of it, the outputs are unchanged.

    Parameters
    ----------
    fc6 : nn.Linear
        ``Linear(channels * g * g, out)``.
    channels : int
        Channels of the feature map.

    Returns
    -------
    nn.Linear
        ``Linear(channels, out)``.

    Examples
    --------
    >>> fold_fc6(nn.Linear(2 * 9, 4), 2).weight.shape
    torch.Size([4, 2])
    """
    out, width = fc6.weight.shape
    if width % channels:
        raise ValueError(f"fc6 has {width} inputs, not a multiple of {channels} channels")
    new = nn.Linear(channels, out, bias=fc6.bias is not None)
    with torch.no_grad():
        new.weight.copy_(fc6.weight.reshape(out, channels, -1).sum(dim=2))
        if fc6.bias is not None and new.bias is not None:
            new.bias.copy_(fc6.bias)
    return new


def _resnet_body(m: Any, in_channels: int, small: bool, pretrained: bool) -> tuple[nn.Module, int]:
    if small:
        conv1 = _adapt_first_conv(
            m.conv1, in_channels, pretrained=pretrained, kernel_size=3, stride=1
        )
        maxpool: nn.Module = nn.Identity()
    else:
        conv1 = _adapt_first_conv(m.conv1, in_channels, pretrained=pretrained)
        maxpool = m.maxpool
    body = nn.Sequential(
        conv1,
        m.bn1,
        m.relu,
        maxpool,
        m.layer1,
        m.layer2,
        m.layer3,
        m.layer4,
        m.avgpool,
        nn.Flatten(),
    )
    return body, int(m.fc.in_features)


def _vgg_body(m: Any, in_channels: int, small: bool, pretrained: bool) -> tuple[nn.Module, int]:
    feats = list(m.features)
    feats[0] = _adapt_first_conv(feats[0], in_channels, pretrained=pretrained)
    classifier = list(m.classifier)[:-1]  # fc6, ReLU, Dropout, fc7, ReLU, Dropout: 4096, >= 0
    if small:
        feats = feats[:-1]  # keep a 28 px input from shrinking to 0x0 at the fifth max-pool
        pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        fc6 = m.classifier[0]
        classifier[0] = fold_fc6(fc6, 512) if pretrained else nn.Linear(512, fc6.out_features)
    else:
        pool = m.avgpool
    return nn.Sequential(nn.Sequential(*feats), pool, nn.Flatten(), *classifier), 4096


def _efficientnet_body(
    m: Any, in_channels: int, small: bool, pretrained: bool
) -> tuple[nn.Module, int]:
    m.features[0][0] = _adapt_first_conv(
        m.features[0][0], in_channels, pretrained=pretrained, stride=1 if small else None
    )
    dropout, fc = m.classifier
    # SiLU outputs can be slightly negative: a ReLU keeps the features >= 0.
    body = nn.Sequential(m.features, m.avgpool, nn.Flatten(), nn.ReLU(), dropout)
    return body, int(fc.in_features)


def _mobilenet_body(
    m: Any, in_channels: int, small: bool, pretrained: bool
) -> tuple[nn.Module, int]:
    m.features[0][0] = _adapt_first_conv(
        m.features[0][0], in_channels, pretrained=pretrained, stride=1 if small else None
    )
    hidden, act, dropout, fc = m.classifier
    # Hardswish outputs can be negative (down to -0.375): a ReLU keeps the features >= 0.
    body = nn.Sequential(m.features, m.avgpool, nn.Flatten(), hidden, act, nn.ReLU(), dropout)
    return body, int(fc.in_features)


_BODIES: dict[str, Callable[[Any, int, bool, bool], tuple[nn.Module, int]]] = {
    "resnet": _resnet_body,
    "vgg": _vgg_body,
    "efficientnet": _efficientnet_body,
    "mobilenet": _mobilenet_body,
}


def _torchvision(
    name: str,
    shape: tuple[int, ...],
    num_outputs: int,
    pretrained: bool,
    *,
    small_input: bool | None = None,
) -> OrdinalModel:
    from torchvision import models as tvm

    c, h, w = _image_shape(name, shape, 16)
    small = min(h, w) <= SMALL_INPUT_SIDE if small_input is None else bool(small_input)
    state = _load_cached_state_dict(name) if pretrained else None
    family = next(k for k in _BODIES if name.startswith(k))
    # A small-input VGG drops the 25088 x 4096 fc6: build it on the meta device and initialise
    # only what is kept (seconds saved), with torchvision's own VGG rules.
    lazy = family == "vgg" and small and state is None
    with torch.device("meta") if lazy else contextlib.nullcontext():
        model = tvm.get_model(name, weights=None)
    if state is not None:
        model.load_state_dict(state)
    body, dim = _BODIES[family](model, c, small, pretrained)
    if lazy:
        body.to_empty(device="cpu")
        _init_like_torchvision_vgg(body)
    return OrdinalModel(body, dim, num_outputs, name)


def _init_like_torchvision_vgg(module: nn.Module) -> None:
    """torchvision's ``VGG.__init__`` initialisation, applied to every layer of ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)


def build_model(
    name: str,
    *,
    num_outputs: int,
    input_shape: Sequence[int],
    pretrained: bool = False,
    **kwargs: Any,
) -> OrdinalModel:
    """Build a model of :data:`MODEL_NAMES` for the given input shape.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    num_outputs : int
        Outputs of the linear head.
    input_shape : sequence of int
        Shape of one sample: ``(features,)`` (any shape for ``"mlp"``, flattened) or
        ``(channels, height, width)`` for image models. Any channel count works; pretrained first
        convolutions are adapted (summed for grey, repeated and rescaled otherwise).
    pretrained : bool
        Start torchvision backbones from ImageNet weights found in the local torch cache
        (:func:`pretrained_weights_path`); ``FileNotFoundError`` naming the file when absent.
        The small-input ResNet stem is freshly initialised either way.
    **kwargs
        ``"mlp"``: ``hidden_sizes=(256, 128)``, ``dropout=0.0``, ``batchnorm=False``.
        ``"cnn"``: ``width=16`` (channels of the first stage; 2x and 4x after), ``dropout=0.0``.
        Backbones: ``small_input`` (default: smaller side <= :data:`SMALL_INPUT_SIDE`).

    Returns
    -------
    OrdinalModel

    Examples
    --------
    >>> model = build_model("cnn", num_outputs=5, input_shape=(3, 28, 28))
    >>> model.features(torch.zeros(2, 3, 28, 28)).shape, model(torch.zeros(2, 3, 28, 28)).shape
    (torch.Size([2, 64]), torch.Size([2, 5]))
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    n_out = _positive_int(num_outputs, "num_outputs")
    shape = _check_shape(input_shape)
    if name in ("mlp", "cnn"):
        if pretrained:
            raise ValueError(
                f"model {name!r} has no pretrained weights; pretrained=True needs one of "
                f"{', '.join(_TORCHVISION_NAMES)}"
            )
        if name == "mlp":
            _no_extra(name, kwargs, ("hidden_sizes", "dropout", "batchnorm"))
            return _mlp(shape, n_out, **kwargs)
        _no_extra(name, kwargs, ("width", "dropout"))
        return _cnn(shape, n_out, **kwargs)
    _no_extra(name, kwargs, ("small_input",))
    return _torchvision(name, shape, n_out, bool(pretrained), **kwargs)
