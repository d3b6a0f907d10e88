"""nnU-Net's topology rule and memory proxy, on cases worked out by hand."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from trainables.planning.topology import (
    feature_map_voxels,
    stage_features,
    topology,
)


def test_isotropic_patch_pools_every_axis_down_to_a_4_voxel_bottleneck() -> None:
    topo = topology((1.0, 1.0, 1.0), (128, 128, 128))
    # 128 -> 64 -> 32 -> 16 -> 8 -> 4: five poolings, six stages
    assert topo.strides == ((1, 1, 1),) + ((2, 2, 2),) * 5
    assert topo.kernel_sizes == ((3, 3, 3),) * 6
    assert (topo.patch_size, topo.divisor) == ((128, 128, 128), (32, 32, 32))


def test_a_patch_is_padded_up_to_what_its_strides_divide() -> None:
    # 138 -> five poolings (138, 69, 35, 18, 9 are all >= 8): padded to 160 = 5 x 32
    assert topology((1.0, 1.0, 1.0), (138, 138, 138)).patch_size == (160, 160, 160)


def test_thick_slices_keep_z_until_in_plane_catches_up() -> None:
    topo = topology((0.7, 0.7, 2.5), (160, 160, 32))
    # in-plane spacing 0.7 -> 1.4 -> 2.8: Z (2.5) is within 2x from the second pooling on
    assert topo.strides[:3] == ((1, 1, 1), (2, 2, 1), (2, 2, 2))
    # Z's kernel is 1 while it is more than 2x coarser than the finest axis, then 3 for good
    assert topo.kernel_sizes[:2] == ((3, 3, 1), (3, 3, 3))
    assert topo.kernel_sizes[-1] == (3, 3, 3)


def test_a_lone_axis_is_only_halved_while_it_keeps_12_voxels() -> None:
    # only X is long enough (>= 8) to pool; alone, it must also keep 12 voxels (no slivers)
    assert topology((1.0, 1.0, 1.0), (10, 4, 4)).strides == ((1, 1, 1),)
    assert topology((1.0, 1.0, 1.0), (12, 4, 4)).strides == ((1, 1, 1), (2, 1, 1))


def test_a_coarse_axis_joins_once_the_others_have_caught_up() -> None:
    topo = topology((1.0, 4.0, 4.0), (40, 8, 8))
    # X alone at 1 and 2 mm; at 4 mm all three are within 2x and pool together
    assert topo.strides == ((1, 1, 1), (2, 1, 1), (2, 1, 1), (2, 2, 2))
    assert topo.kernel_sizes == ((3, 1, 1), (3, 1, 1), (3, 3, 3), (3, 3, 3))


def test_feature_map_voxels_by_hand() -> None:
    # two stages on an 8x8 patch: encoder 2x(4x64) + 2x(8x16); decoder level 0 has two convs
    # and the transposed conv at 4 features x 64 voxels; the head writes 3 x 64
    got = feature_map_voxels((8, 8), ((1, 1), (2, 2)), (4, 8), num_classes=3)
    assert got == 2 * 4 * 64 + 2 * 8 * 16 + 3 * 4 * 64 + 3 * 64


def test_stage_features_double_up_to_the_cap() -> None:
    assert stage_features(7, 32, 320) == (32, 64, 128, 256, 320, 320, 320)


@pytest.mark.skipif(
    importlib.util.find_spec("dynamic_network_architectures") is None,
    reason="dynamic_network_architectures (nnU-Net's networks) is not installed",
)
@pytest.mark.parametrize(
    ("spacing", "patch"),
    [((1.0, 1.0, 1.0), (128, 128, 128)), ((0.7, 0.7, 2.5), (160, 192, 40)), ((1.0, 1.0), (96, 64))],
)
def test_feature_map_voxels_equals_plain_conv_unets_own_count(spacing, patch) -> None:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    topo = topology(spacing, patch)
    features = stage_features(topo.num_stages, 32, 320)
    dims = len(spacing)
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    norm = torch.nn.InstanceNorm3d if dims == 3 else torch.nn.InstanceNorm2d
    net = PlainConvUNet(
        4, topo.num_stages, features, conv, topo.kernel_sizes, topo.strides, 2, 3,
        (2,) * (topo.num_stages - 1), True, norm, {}, None, None, torch.nn.LeakyReLU, {},
    )  # fmt: skip
    expected = int(net.compute_conv_feature_map_size(topo.patch_size))
    assert feature_map_voxels(topo.patch_size, topo.strides, features, 3) == expected
