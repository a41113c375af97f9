"""emdloss.models: shapes, features, parameter counts against torchvision, pretrained weights from
the local cache only."""

from __future__ import annotations

import math
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("torchvision")  # emdloss.models: the train extra

import torchvision

from emdloss.models import (
    MODEL_NAMES,
    OrdinalModel,
    build_model,
    fold_fc6,
    pretrained_weights_path,
)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _input_shape(name: str) -> tuple[int, ...]:
    return (7,) if name == "mlp" else (3, 32, 32)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_features_and_head(name: str) -> None:
    torch.manual_seed(0)
    shape = _input_shape(name)
    model = build_model(name, num_outputs=5, input_shape=shape)
    assert isinstance(model, OrdinalModel) and isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.feature_dim and model.head.out_features == 5
    x = 3.0 * torch.randn(2, *shape)
    model.eval()
    with torch.no_grad():
        feats, out = model.features(x), model(x)
    assert feats.shape == (2, model.feature_dim)
    assert out.shape == (2, 5)
    assert bool((feats >= 0).all()), f"{name}: min feature {float(feats.min())}"
    assert bool((feats > 0).any())
    torch.testing.assert_close(out, model.head(feats), rtol=0, atol=0)
    # train mode (batch statistics, dropout) keeps features non-negative too
    model.train()
    assert bool((model.features(x) >= 0).all())


def _first_conv(module: nn.Module) -> nn.Conv2d:
    return next(m for m in module.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("resnet18", (3, 32, 32)),
        ("resnet18", (1, 28, 28)),
        ("resnet18", (3, 72, 72)),
        ("vgg16", (1, 28, 28)),
        ("efficientnet_b0", (4, 32, 32)),
        ("mobilenet_v3_small", (3, 32, 32)),
    ],
)
def test_parameter_counts_match_torchvision(name: str, shape: tuple[int, int, int]) -> None:
    with torch.device("meta"):  # counts only: skip the initialisation
        tv = torchvision.models.get_model(name, weights=None)
    linears = [m for m in tv.modules() if isinstance(m, nn.Linear)]
    last, conv = linears[-1], _first_conv(tv)
    small = max(shape[1:]) <= 64
    k = 3 if name.startswith("resnet") and small else conv.kernel_size[0]
    expected = (
        _n_params(tv)
        - _n_params(last)
        + (last.in_features + 1) * 5
        - conv.weight.numel()
        + conv.out_channels * shape[0] * k * k
    )
    if name.startswith("vgg") and small:  # fc6 sees a 1x1 map: 512 inputs instead of 512*7*7
        expected -= (512 * 49 - 512) * linears[0].out_features
    model = build_model(name, num_outputs=5, input_shape=shape)
    assert _n_params(model) == expected
    assert _first_conv(model).stride == ((1, 1) if small else conv.stride)


def test_resnet_stem_depends_on_input_size() -> None:
    small = build_model("resnet18", num_outputs=3, input_shape=(3, 32, 32))
    big = build_model("resnet18", num_outputs=3, input_shape=(3, 96, 96))
    forced = build_model("resnet18", num_outputs=3, input_shape=(3, 32, 32), small_input=False)
    assert _first_conv(small).kernel_size == (3, 3) and isinstance(small.body[3], nn.Identity)
    assert _first_conv(big).kernel_size == (7, 7) and isinstance(big.body[3], nn.MaxPool2d)
    assert _first_conv(forced).kernel_size == (7, 7)
    # a 28 px image keeps a 4x4 map before the global pool (CIFAR/MedMNIST style)
    trunk = nn.Sequential(*list(small.body)[:-2])
    assert trunk(torch.zeros(1, 3, 28, 28)).shape[-2:] == (4, 4)


@pytest.mark.parametrize("name", ["vgg16", "vgg16_bn"])
def test_small_vgg_is_initialised_like_torchvision(name: str) -> None:
    # built on the meta device then materialised: nothing may stay uninitialised
    torch.manual_seed(0)
    model = build_model(name, num_outputs=3, input_shape=(3, 28, 28))
    for key, value in model.state_dict().items():
        assert value.device.type == "cpu" and bool(torch.isfinite(value.float()).all()), key
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
            assert torch.equal(m.weight, torch.ones_like(m.weight))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs:  # kaiming normal, fan_out, ReLU gain
        expected = math.sqrt(2.0 / (conv.out_channels * 9))
        assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.05)
        assert conv.bias is None or not bool(conv.bias.any())
    fc6 = model.body[3]
    assert isinstance(fc6, nn.Linear) and fc6.in_features == 512
    assert float(fc6.weight.detach().std()) == pytest.approx(0.01, rel=0.05)


def test_mlp_and_cnn_parameter_counts_by_hand() -> None:
    c = 5
    mlp = build_model("mlp", num_outputs=c, input_shape=(4, 3), hidden_sizes=(16, 8))
    assert mlp.feature_dim == 8
    assert _n_params(mlp) == (12 * 16 + 16) + (16 * 8 + 8) + (8 * c + c)
    mlp_bn = build_model(
        "mlp", num_outputs=c, input_shape=(12,), hidden_sizes=(16, 8), batchnorm=True, dropout=0.2
    )
    assert _n_params(mlp_bn) == (12 * 16 + 2 * 16) + (16 * 8 + 2 * 8) + (8 * c + c)
    w = 8
    cnn = build_model("cnn", num_outputs=c, input_shape=(1, 28, 28), width=w)
    convs = 9 * (1 * w + w * 2 * w + 2 * w * 4 * w)
    bns = 2 * (w + 2 * w + 4 * w)
    assert cnn.feature_dim == 4 * w
    assert _n_params(cnn) == convs + bns + 4 * w * c + c


def test_other_channel_counts_and_sizes() -> None:
    for shape in [(1, 28, 28), (4, 28, 28), (3, 64, 48), (3, 128, 128)]:
        model = build_model("cnn", num_outputs=2, input_shape=shape).eval()
        assert model(torch.rand(2, *shape)).shape == (2, 2)
    model = build_model("resnet18", num_outputs=2, input_shape=(5, 28, 28)).eval()
    assert model(torch.rand(2, 5, 28, 28)).shape == (2, 2)


def test_same_seed_same_model_and_output() -> None:
    x = torch.rand(3, 3, 28, 28)

    def make(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model("cnn", num_outputs=4, input_shape=(3, 28, 28), dropout=0.3)
        out = model(x)  # train mode: dropout draws from the seeded generator too
        return model.state_dict(), out

    (a, out_a), (b, out_b), (c, _) = make(1), make(1), make(2)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    assert not torch.equal(a["head.weight"], c["head.weight"])


def test_cnn_learns_on_real_retinamnist(data_dir: Path) -> None:
    with np.load(data_dir / "retinamnist.npz") as npz:
        x = torch.from_numpy(npz["train_images"][:64]).permute(0, 3, 1, 2).float() / 255.0
        y = torch.from_numpy(npz["train_labels"][:64, 0]).long()
    torch.manual_seed(0)
    model = build_model("cnn", num_outputs=5, input_shape=tuple(x.shape[1:]))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------------------------------------
# pretrained weights: only from the local cache
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def offline_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch cache under tmp_path; any attempt to download fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path / "hub" / "checkpoints"


def test_missing_pretrained_weights_name_the_file(offline_cache: Path) -> None:
    path, url = pretrained_weights_path("resnet18")
    assert path == offline_cache / "resnet18-f37072fd.pth"
    with pytest.raises(FileNotFoundError) as err:
        build_model("resnet18", num_outputs=5, input_shape=(3, 32, 32), pretrained=True)
    message = str(err.value)
    assert str(path) in message and url in message and "TORCH_HOME" in message
    assert not path.exists()


def _cache(name: str, directory: Path, seed: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Save a randomly initialised torchvision model under the name of its official weights."""
    torch.manual_seed(seed)
    tv = torchvision.models.get_model(name, weights=None)
    # non-trivial BN statistics, so a wrong load shows
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    directory.mkdir(parents=True, exist_ok=True)
    state = tv.state_dict()
    torch.save(state, directory / pretrained_weights_path(name)[0].name)
    return tv.eval(), state


def test_resnet_loads_cached_weights(offline_cache: Path) -> None:
    tv, state = _cache("resnet18", offline_cache, seed=3)
    model = build_model("resnet18", num_outputs=5, input_shape=(3, 72, 72), pretrained=True)
    model.eval()
    tv.fc = nn.Identity()
    x = torch.rand(2, 3, 72, 72)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), tv(x))
    # grey input: the RGB filters summed; 4 channels: repeated and scaled by 3/4
    grey = build_model("resnet18", num_outputs=5, input_shape=(1, 72, 72), pretrained=True)
    torch.testing.assert_close(
        _first_conv(grey).weight, state["conv1.weight"].sum(dim=1, keepdim=True)
    )
    four = build_model("resnet18", num_outputs=5, input_shape=(4, 72, 72), pretrained=True)
    torch.testing.assert_close(
        _first_conv(four).weight, state["conv1.weight"][:, [0, 1, 2, 0]] * 0.75
    )
    # small input: a fresh 3x3 stem, everything after it pretrained
    small = build_model("resnet18", num_outputs=5, input_shape=(3, 28, 28), pretrained=True)
    assert _first_conv(small).weight.shape == (64, 3, 3, 3)
    torch.testing.assert_close(small.body[4][0].conv1.weight, state["layer1.0.conv1.weight"])
    torch.testing.assert_close(small.body[1].running_var, state["bn1.running_var"])


def test_mobilenet_loads_cached_weights_and_only_clips_negatives(offline_cache: Path) -> None:
    tv, _ = _cache("mobilenet_v3_small", offline_cache, seed=4)
    model = build_model(
        "mobilenet_v3_small", num_outputs=3, input_shape=(3, 96, 96), pretrained=True
    )
    model.eval()
    tv.classifier = tv.classifier[:2]  # Linear(576, 1024), Hardswish
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), tv(x).clamp_min(0.0))


def test_fold_fc6_is_exact_for_a_one_by_one_map() -> None:
    torch.manual_seed(0)
    channels, grid = 4, 7
    fc6 = nn.Linear(channels * grid * grid, 3)
    x = torch.randn(2, channels, 1, 1)
    replicated = torch.flatten(nn.AdaptiveAvgPool2d((grid, grid))(x), 1)  # torchvision's path
    torch.testing.assert_close(fold_fc6(fc6, channels)(x.flatten(1)), fc6(replicated))
    with pytest.raises(ValueError, match="not a multiple of 5"):
        fold_fc6(fc6, 5)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet9'.*mlp, cnn, resnet18"):
        build_model("resnet9", num_outputs=3, input_shape=(3, 28, 28))
    with pytest.raises(ValueError, match="num_outputs must be a positive integer, got 0"):
        build_model("mlp", num_outputs=0, input_shape=(3,))
    with pytest.raises(ValueError, match=r"input_shape must be.*\(3, 0\)"):
        build_model("mlp", num_outputs=2, input_shape=(3, 0))
    with pytest.raises(ValueError, match=r"\(channels, height, width\), got \(12,\)"):
        build_model("cnn", num_outputs=2, input_shape=(12,))
    with pytest.raises(ValueError, match="side >= 16, got 8x8"):
        build_model("resnet18", num_outputs=2, input_shape=(3, 8, 8))
    with pytest.raises(TypeError, match=r"unexpected options \['depth'\]"):
        build_model("cnn", num_outputs=2, input_shape=(3, 28, 28), depth=3)
    with pytest.raises(ValueError, match="'mlp' has no pretrained weights"):
        build_model("mlp", num_outputs=2, input_shape=(3,), pretrained=True)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        build_model("mlp", num_outputs=2, input_shape=(3,), hidden_sizes=())
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):
        build_model("cnn", num_outputs=2, input_shape=(3, 28, 28), dropout=1.5)
    with pytest.raises(ValueError, match="no pretrained weights for model 'cnn'"):
        pretrained_weights_path("cnn")
