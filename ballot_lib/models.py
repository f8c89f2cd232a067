"""Models by name: ``mlp``, ``cnn`` (Conv-4 style), ``resnet18``, ``resnet50`` and ``vgg16_bn``.

The ResNets and VGG come from torchvision's constructors. For inputs of at most 64 px they get a CIFAR-style
stem (3x3 stride-1 first convolution, no max-pool) and VGG a 512 -> C classifier after global average pooling.
Every model reports its prunable layers (:func:`prunable_names`): the weights of Conv2d and Linear layers,
minus those listed in the model's ``prune_ignore`` attribute.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Optional

import torch
from torch import nn

from .registry import Registry
from .checks import ParameterError, check_applies, check_fields, check_int

#: name -> builder(input_shape, num_classes, cfg) -> nn.Module
MODELS: Registry[Callable[[tuple[int, ...], int, "ModelConfig"], nn.Module]] = Registry("model")

SMALL_IMAGE_MAX = 64

#: Models that take feature vectors (any input shape, flattened). Every other model of :data:`MODELS` needs images
#: [C, H, W]; a model registered for tabular data adds its name here, so that notebook 03's settings (and their
#: plans) pair it with tabular datasets.
FLAT_INPUT_MODELS: set[str] = {"mlp"}


#: The :class:`ModelConfig` options each built-in model's builder uses: ``width`` (mlp hidden units, cnn channels)
#: and ``prune_first_conv`` (models with a first convolution, ``net.first_conv``). A non-default option a model
#: does not use is refused (it would be ignored, yet change the run id). A model not listed (one registered
#: outside the library) is not checked; its registration may add its entry.
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("width",),
    "cnn": ("width", "prune_first_conv"),
    "resnet18": ("prune_first_conv",),
    "resnet50": ("prune_first_conv",),
    "vgg16_bn": ("prune_first_conv",),
}


def takes_input(model: str, image: bool) -> bool:
    """Whether ``model`` can train on a dataset whose inputs are images [C, H, W] (``image``) or feature vectors."""
    return image or model in FLAT_INPUT_MODELS


def check_takes_input(model: str, dataset: str, image: Optional[bool]) -> None:
    """Refuse ``model`` on a dataset of feature vectors when it takes images (``image``: whether the dataset gives
    images; None: not known, nothing refused). Raises :class:`~ballot_lib.checks.ParameterError`."""
    if image is not None and not takes_input(model, image=image):
        raise ParameterError(f"model {model!r} takes images and dataset {dataset!r} gives feature vectors: use "
                             f"model {' or '.join(repr(m) for m in sorted(FLAT_INPUT_MODELS))}")


@dataclass(frozen=True)
class ModelConfig:
    """Which network to build."""

    name: str = "mlp"  # model name, one of ballot_lib.models.MODELS.names()
    width: Optional[int] = None  # mlp hidden units / cnn first-layer channels; None = model default
    prune_first_conv: bool = True  # False adds the first convolution to the model's prune_ignore list

    def identity(self) -> dict:
        return asdict(self)

    def validate(self) -> "ModelConfig":
        """Check the fields' types (no coercion), the model name, the width and that the options apply to the
        model (:data:`MODEL_OPTIONS`)."""
        check_fields(self)
        MODELS.get(self.name)
        if self.width is not None:
            check_int("width", self.width, 1)
        if self.name in MODEL_OPTIONS:
            default = ModelConfig()
            for key in ("width", "prune_first_conv"):
                takes = [m for m, options in MODEL_OPTIONS.items() if key in options]
                check_applies(key, getattr(self, key), getattr(default, key), key in MODEL_OPTIONS[self.name],
                              f"models {', '.join(takes)}", f"model {self.name!r} (its builder ignores it)")
        return self


def _require_image(name: str, input_shape: tuple[int, ...], min_size: int = 1) -> tuple[int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs image inputs [C, H, W], but the dataset has feature vectors of shape "
            f"{list(input_shape)}; use model {' or '.join(repr(m) for m in sorted(FLAT_INPUT_MODELS))} for "
            f"tabular data"
        )
    c, h, w = input_shape
    if min(h, w) < min_size:
        raise ValueError(f"model {name!r} needs images of at least {min_size} px, got {h}x{w}")
    return c, max(h, w)


class MLP(nn.Sequential):
    """Flatten, then ``depth`` hidden ReLU layers of ``width`` units, then a linear classifier."""

    def __init__(self, in_features: int, num_classes: int, width: int = 128, depth: int = 2) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU(inplace=True)]
            d = width
        layers.append(nn.Linear(d, num_classes))
        super().__init__(*layers)


class ConvNet(nn.Module):
    """Conv-4 style network: two blocks of (conv, conv, max-pool), then a 256-unit hidden layer."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(2 * w * 4, 256), nn.ReLU(inplace=True), nn.Linear(256, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("mlp")
def build_mlp(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    in_features = 1
    for s in input_shape:
        in_features *= s
    return MLP(in_features, num_classes, width=cfg.width or 128)


@MODELS.register("cnn")
def build_cnn(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    c, _ = _require_image("cnn", input_shape, 4)
    net = ConvNet(c, num_classes, width=cfg.width or 32)
    setattr(net, "first_conv", "features.0")
    return net


def _resnet(arch: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    import torchvision

    c, size = _require_image(arch, input_shape, 8)
    net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if size <= SMALL_IMAGE_MAX:
        net.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif c != 3:
        net.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
    setattr(net, "first_conv", "conv1")
    return net


@MODELS.register("resnet18")
def build_resnet18(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    return _resnet("resnet18", input_shape, num_classes)


@MODELS.register("resnet50")
def build_resnet50(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    return _resnet("resnet50", input_shape, num_classes)


@MODELS.register("vgg16_bn")
def build_vgg16_bn(input_shape: tuple[int, ...], num_classes: int, cfg: ModelConfig) -> nn.Module:
    import torchvision

    c, size = _require_image("vgg16_bn", input_shape, 32)
    net = torchvision.models.vgg16_bn(weights=None, num_classes=num_classes)
    if c != 3:
        net.features[0] = nn.Conv2d(c, 64, kernel_size=3, padding=1)
    if size <= SMALL_IMAGE_MAX:
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier = nn.Linear(512, num_classes)
    setattr(net, "first_conv", "features.0")
    return net


def build_model(cfg: ModelConfig | str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build a freshly initialised model for inputs of ``input_shape`` (without the batch dimension)."""
    cfg = ModelConfig(name=cfg) if isinstance(cfg, str) else cfg
    cfg.validate()
    net = MODELS.get(cfg.name)(tuple(input_shape), num_classes, cfg)
    if not isinstance(net, nn.Module):
        raise TypeError(f"model builder {cfg.name!r} must return a torch.nn.Module, got {type(net).__name__}")
    ignore = list(getattr(net, "prune_ignore", []))  # a builder's own list is kept (it was overwritten)
    if not cfg.prune_first_conv and getattr(net, "first_conv", None):
        ignore.append(getattr(net, "first_conv") + ".weight")
    setattr(net, "prune_ignore", ignore)
    return net


def prunable_names(net: nn.Module) -> list[str]:
    """Names of the prunable weights: Conv2d and Linear ``weight``s not in ``net.prune_ignore``, in order."""
    ignore = set(getattr(net, "prune_ignore", []))
    names = []
    for mod_name, mod in net.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            pname = f"{mod_name}.weight" if mod_name else "weight"
            if pname not in ignore:
                names.append(pname)
    return names


def prunable_parameters(net: nn.Module) -> dict[str, nn.Parameter]:
    """Map prunable weight names to their parameters."""
    params = dict(net.named_parameters())
    return {n: params[n] for n in prunable_names(net)}
