"""Architecture registry. Every model's last fully connected layer is named ``head``.

- ``small_cnn``: four conv layers for 8x8 digits (option ``width``);
- ``resnet18``: the CIFAR ResNet-18: ResNet-18 with the CIFAR stem (3x3 stride-1 conv1, no max-pool);
- ``vgg19``: the CIFAR VGG-19: VGG-19 with BatchNorm in the Morcos et al. (2019) variant: the
  three-layer MLP is replaced by one fully connected layer on the globally pooled features;
- ``resnet50`` and ``alexnet``: the torchvision definitions (ImageNet stems), with their
  last linear layer moved to ``head``.

The pruning code never prunes ``head``, BatchNorm parameters or biases; every other conv
and linear weight (``conv1`` included; AlexNet's first two FC layers) is prunable.

Models are built inside a forked RNG seeded by the caller, so building one never
disturbs the global random state and the same seed always gives the same weights.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torchvision
from torch import nn


class SmallCNN(nn.Module):
    """Four 3x3 conv+BN+ReLU layers in two pooled blocks, global average pool, ``head``."""

    def __init__(self, num_outputs: int, in_channels: int, width: int = 16):
        super().__init__()
        w = int(width)

        def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *conv_bn_relu(in_channels, w), *conv_bn_relu(w, w), nn.MaxPool2d(2),
            *conv_bn_relu(w, 2 * w), *conv_bn_relu(2 * w, 2 * w), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * w, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@contextlib.contextmanager
def _seeded_cpu_rng(seed: int) -> Iterator[None]:
    """Seed the CPU generator inside a fork of it (CUDA generators are not touched)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        yield


def small_cnn(num_outputs: int, in_channels: int, width: int = 16) -> nn.Module:
    """The small CNN for 8x8 inputs (see :class:`SmallCNN`)."""
    return SmallCNN(num_outputs=num_outputs, in_channels=in_channels, width=width)


class _ResNet(torchvision.models.ResNet):
    """torchvision's ResNet with ``fc`` renamed ``head``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.head = self.fc
        del self.fc

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(torch.flatten(self.avgpool(x), 1))


def _stem_channels(conv: nn.Conv2d, in_channels: int, kaiming: bool) -> nn.Conv2d:
    """``conv`` itself for its own input channels, else a fresh conv of its shape on ``in_channels``
    (initialised like the original: kaiming fan-out for ResNets, PyTorch's default for AlexNet)."""
    if in_channels == conv.in_channels:
        return conv
    replacement = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            bias=conv.bias is not None)
    if kaiming:
        nn.init.kaiming_normal_(replacement.weight, mode="fan_out", nonlinearity="relu")
    return replacement


def resnet18(num_outputs: int, in_channels: int) -> nn.Module:
    """ResNet-18 for 32x32 images: 3x3 stride-1 ``conv1`` and no max-pool (He et al. CIFAR stem)."""
    model = _ResNet(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_outputs)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def resnet50(num_outputs: int, in_channels: int) -> nn.Module:
    """torchvision's ResNet-50 (ImageNet stem), ``fc`` renamed ``head``."""
    model = _ResNet(torchvision.models.resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_outputs)
    model.conv1 = _stem_channels(model.conv1, in_channels, kaiming=True)
    return model


class AlexNet(torchvision.models.AlexNet):
    """torchvision's AlexNet; the last linear layer of ``classifier`` is ``head``."""

    classifier: nn.Sequential

    def __init__(self, num_outputs: int, in_channels: int):
        super().__init__(num_classes=num_outputs)
        self.features[0] = _stem_channels(self.features[0], in_channels, kaiming=False)
        self.head = self.classifier[-1]
        self.classifier = self.classifier[:-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.head(self.classifier(x))


def alexnet(num_outputs: int, in_channels: int) -> nn.Module:
    """torchvision's AlexNet (see :class:`AlexNet`); inputs of at least 63x63 pixels."""
    return AlexNet(num_outputs, in_channels)


VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                512, 512, 512, 512, "M")


class VGG19(nn.Module):
    """VGG-19 with BatchNorm whose MLP is one linear ``head`` on the globally pooled features."""

    def __init__(self, num_outputs: int, in_channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG19_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item)),
                           nn.ReLU(inplace=True)]
                channels = int(item)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.head = nn.Linear(channels, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def vgg19(num_outputs: int, in_channels: int) -> nn.Module:
    """VGG-19 (Morcos et al. variant, see :class:`VGG19`); inputs of at least 32x32 pixels."""
    return VGG19(num_outputs, in_channels)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn, "resnet18": resnet18, "vgg19": vgg19,
    "resnet50": resnet50, "alexnet": alexnet,
}


def build_model(arch_cfg: Mapping[str, Any], num_outputs: int, in_channels: int,
                seed: int) -> nn.Module:
    """Build ``arch_cfg["name"]`` (other keys are keyword arguments) on the CPU from ``seed``.

    The global RNG is left exactly as it was.
    """
    options = dict(arch_cfg)
    name = options.pop("name", None)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}")
    with _seeded_cpu_rng(seed):
        return ARCHITECTURES[name](num_outputs=num_outputs, in_channels=in_channels, **options)


def redraw_head(model: nn.Module, seed: int) -> None:
    """Give ``model.head`` fresh default-initialised weights drawn from ``seed``.

    Call it while the model is on the CPU: only the CPU generator is seeded.
    """
    with _seeded_cpu_rng(seed):
        model.head.reset_parameters()
