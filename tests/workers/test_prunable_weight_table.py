"""The torch-free count of prunable weights (``workers.catalog.prunable_weights``, which the sweep
file's checks use) is the count of the networks ``workers.models`` builds."""
from __future__ import annotations

import pytest
import torch

from workers import catalog
from workers.models import ARCHITECTURES, VGG19_LAYOUT
from workers.pruning.masks import first_conv_names, prunable_shapes


def _built(arch: dict, in_channels: int) -> torch.nn.Module:
    options = {key: value for key, value in arch.items() if key != "name"}
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        return ARCHITECTURES[arch["name"]](num_outputs=10, in_channels=in_channels, **options)


@pytest.mark.parametrize("arch", [{"name": "small_cnn"}, {"name": "small_cnn", "width": 5}, {"name": "resnet18"},
                                  {"name": "resnet50"}, {"name": "vgg19"}, {"name": "alexnet"}],
                         ids=lambda arch: "-".join(map(str, arch.values())))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_the_table_counts_what_the_network_prunes(arch, in_channels):
    model = _built(arch, in_channels)
    shapes = prunable_shapes(model)
    assert catalog.prunable_weights(arch, in_channels) == sum(shape.numel() for shape in shapes.values())
    convolutions = catalog.CONVOLUTIONS[arch["name"]]
    for layers in sorted({1, 2, convolutions // 2, convolutions}):
        expected = sum(shapes[name].numel() for name in first_conv_names(model, layers))
        assert catalog.prunable_weights(arch, in_channels, layers) == expected, layers


def test_the_catalog_copies_the_vgg_layout():
    assert catalog._VGG19_LAYOUT == VGG19_LAYOUT
