"""Architecture registry. Every model's last fully connected layer is named ``head``.

Models are built inside a forked RNG seeded by the caller, so building one never
disturbs the global random state and the same seed always gives the same weights.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch
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


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"small_cnn": small_cnn}


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
