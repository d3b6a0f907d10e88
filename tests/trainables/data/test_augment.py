"""Batched torch augmentation: exactness of flips and rotations, identity, determinism, ranges,
the host-side decisions' frequencies and (on CUDA) the absence of any host sync."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainables.config import validate_config
from trainables.data import augment as augment_module
from trainables.data.augment import (
    AugmentConfig,
    adjust_gamma,
    augment_batch,
    gaussian_blur,
    rotation_matrices,
    simulate_low_resolution,
    spatial_plan,
    spatial_transform,
)
from trainables.errors import InputError

# per-sample probabilities; the per-channel ones (blur, lowres) stay at their defaults
PROBS = [n for n in AugmentConfig.model_fields if n.endswith("_prob") and "channel" not in n]


def _config(**probs: float) -> AugmentConfig:
    """Every probability 0 except the ones given."""
    return AugmentConfig(**{**dict.fromkeys(PROBS, 0.0), **probs})


def _batch(spatial: tuple[int, ...] = (16, 16, 16), seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, *spatial, generator=g)
    label = torch.randint(0, 4, (2, *spatial), generator=g)
    return image, label


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_config_validation_names_field() -> None:
    with pytest.raises(InputError, match=r"flip_prob: .*less than or equal to 1"):
        validate_config(AugmentConfig, {"flip_prob": 1.5})
    with pytest.raises(InputError, match=r"scale_range: .*low 1.4 is greater than high 0.7"):
        validate_config(AugmentConfig, {"scale_range": [1.4, 0.7]})
    with pytest.raises(InputError, match=r"gamma_range: .*low 0.0 must be > 0"):
        validate_config(AugmentConfig, {"gamma_range": [0.0, 1.0]})
    with pytest.raises(InputError, match=r"noise_std: .*low -0.1 must be >= 0"):
        validate_config(AugmentConfig, {"noise_std": [-0.1, 0.1]})


@pytest.mark.parametrize("spatial", [(16, 16, 16), (12, 20)])
def test_shapes_dtypes_and_label_set_preserved(spatial: tuple[int, ...]) -> None:
    image, label = _batch(spatial)
    cfg = AugmentConfig(**dict.fromkeys(PROBS, 1.0))
    out_image, out_label = augment_batch(image, label, cfg, _gen())
    assert out_image.shape == image.shape and out_image.dtype == image.dtype
    assert out_label.shape == label.shape and out_label.dtype == torch.int64
    assert set(out_label.unique().tolist()) <= set(label.unique().tolist())
    assert torch.isfinite(out_image).all()


def test_all_probabilities_zero_is_exact_identity() -> None:
    image, label = _batch()
    for cfg in (_config(), AugmentConfig(enabled=False)):
        out_image, out_label = augment_batch(image, label, cfg, _gen())
        assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_flips_match_torch_flip_and_invert() -> None:
    image, label = _batch()
    cfg = _config(flip_prob=1.0)
    once = augment_batch(image, label, cfg, _gen(1))
    assert torch.equal(once[0], image.flip(2, 3, 4)) and torch.equal(once[1], label.flip(1, 2, 3))
    twice = augment_batch(*once, cfg, _gen(2))
    assert torch.equal(twice[0], image) and torch.equal(twice[1], label)


def test_partial_flip_touches_only_selected_samples() -> None:
    image, label = _batch()
    out, _ = augment_batch(image, label, _config(flip_prob=0.5), _gen(3))
    for b in range(2):
        candidates = [image[b].flip(dims) for dims in _subsets((1, 2, 3))]
        assert any(torch.equal(out[b], c) for c in candidates)


def _subsets(dims: tuple[int, ...]) -> list[tuple[int, ...]]:
    return [tuple(d for j, d in enumerate(dims) if mask >> j & 1) for mask in range(2 ** len(dims))]


def test_seeded_generator_reproduces_output() -> None:
    image, label = _batch()
    cfg = AugmentConfig(**dict.fromkeys(PROBS, 0.7))
    a = augment_batch(image, label, cfg, _gen(5))
    b = augment_batch(image, label, cfg, _gen(5))
    c = augment_batch(image, label, cfg, _gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_rotation_by_90_degrees_matches_rot90(axis: int) -> None:
    image, label = _batch()
    angles = torch.zeros(2, 3)
    angles[:, axis] = -math.pi / 2
    out_image, out_label = spatial_transform(image, label, rotation_matrices(angles))
    a, b = [d for d in range(3) if d != axis]
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    assert torch.equal(out_label[inner], torch.rot90(label, 1, (a + 1, b + 1))[inner])
    expected = torch.rot90(image, 1, (a + 2, b + 2))
    torch.testing.assert_close(out_image[(slice(None), *inner)], expected[(slice(None), *inner)])


def test_rotation_is_about_the_centre_for_non_square_images() -> None:
    label = torch.zeros(1, 16, 32, dtype=torch.int64)
    label[0, 8, 20] = 1  # offset (+0.5, +4.5) voxels from the centre (7.5, 15.5)
    image = label.unsqueeze(1).float()
    # Output offset o samples input offset M o; M o = (0.5, 4.5) for o = (-4.5, 0.5).
    matrix = rotation_matrices(torch.tensor([[-math.pi / 2]]))
    out_image, out_label = spatial_transform(image, label, matrix)
    assert out_label.nonzero().tolist() == [[0, 3, 16]]
    assert out_image[0, 0, 3, 16] == pytest.approx(1.0, abs=1e-5)


def test_identity_matrix_changes_nothing_but_rounding() -> None:
    image, label = _batch((12, 10, 8))
    eye = torch.eye(3).expand(2, 3, 3)
    out_image, out_label = spatial_transform(image, label, eye)
    assert torch.equal(out_label, label)
    torch.testing.assert_close(out_image, image)


@pytest.mark.parametrize(
    ("shape", "given", "expected"),
    [
        ((128, 160, 112), {}, (30.0, None)),  # nnU-Net's BraTS patch: fully 3-D, 30 degrees
        ((128, 128, 40), {}, (180.0, 2)),  # thick slices (3.2 x): dummy 2-D about Z
        ((20, 128, 112), {}, (180.0, 0)),  # the coarse axis is X
        ((96, 96, 32), {}, (30.0, None)),  # exactly 3 x is not more than 3 x
        ((128, 128), {}, (180.0, None)),  # square slices turn all the way
        ((192, 64), {}, (15.0, None)),  # elongated slices barely
        ((128, 128, 40), {"dummy_2d": False}, (30.0, None)),
        ((64, 64, 64), {"dummy_2d": True, "rotation_deg": 10.0}, (10.0, 0)),
    ],
)
def test_spatial_plan_follows_nnunets_rule_unless_told(shape, given, expected) -> None:
    assert spatial_plan(AugmentConfig(**given), shape) == expected


@pytest.mark.parametrize(("dummy_2d", "spreads"), [(True, False), (False, True)])
def test_dummy_2d_keeps_every_slice_to_itself(dummy_2d: bool, spreads: bool) -> None:
    """A lesion on one Z slice stays on that slice in dummy 2-D; 3-D rotation spreads it."""
    label = torch.zeros(4, 24, 24, 8, dtype=torch.int64)
    label[:, 8:16, 6:18, 3] = 1
    image = label.unsqueeze(1).float()
    cfg = _config(rotation_prob=1.0, scale_prob=1.0).model_copy(
        update={"dummy_2d": dummy_2d, "rotation_deg": 40.0}
    )
    out_image, out_label = augment_batch(image, label, cfg, _gen(3))
    other_slices = [z for z in range(8) if z != 3]
    touched = bool(out_label[..., other_slices].any()) or bool(out_image[..., other_slices].any())
    assert touched is spreads
    assert not torch.equal(out_label, label)  # the slices themselves were rotated and scaled


@pytest.mark.parametrize("axis", [0, 2])
def test_linear_label_resampling_is_exact_on_the_grid(axis: int) -> None:
    image, label = _batch()
    eye = torch.eye(3).expand(2, 3, 3)
    assert torch.equal(spatial_transform(image, label, eye, label_classes=4)[1], label)
    angles = torch.zeros(2, 3)
    angles[:, axis] = -math.pi / 2
    _, rotated = spatial_transform(image, label, rotation_matrices(angles), label_classes=4)
    a, b = [d for d in range(3) if d != axis]
    inner = (slice(None), slice(2, -2), slice(2, -2), slice(2, -2))
    assert torch.equal(rotated[inner], torch.rot90(label, 1, (a + 1, b + 1))[inner])


def test_linear_label_resampling_weighs_classes_as_nnunet_does() -> None:
    """Zoomed 5x about the centre of a 4x4 slice, output voxel (1, 1) samples input (1.4, 1.4):
    its nearest voxel is a lone class-3 voxel, but 64% of the bilinear weight is background."""
    label = torch.zeros(1, 4, 4, dtype=torch.uint8)
    label[0, 1, 1] = 3
    image = torch.zeros(1, 1, 4, 4)
    zoom = torch.eye(2).mul(0.2).unsqueeze(0)
    _, nearest = spatial_transform(image, label, zoom)
    _, linear = spatial_transform(image, label, zoom, label_classes=4)
    assert nearest[0, 1, 1] == 3 and linear[0, 1, 1] == 0
    assert linear.dtype == torch.uint8


def test_linear_label_resampling_makes_mostly_outside_voxels_background() -> None:
    label = torch.full((1, 12, 12), 2, dtype=torch.int64)
    image = torch.ones(1, 1, 12, 12)
    turn = rotation_matrices(torch.tensor([[math.pi / 4]]))
    _, out = spatial_transform(image, label, turn, label_classes=4)
    assert set(out.unique().tolist()) == {0, 2}
    assert out[0, 0, 0] == 0 and out[0, 6, 6] == 2  # a corner lies outside, the centre inside


def test_spatial_augmentation_only_resamples_drawn_samples() -> None:
    image, label = _batch()
    cfg = _config(rotation_prob=0.5, scale_prob=0.5)
    out_image, out_label = augment_batch(image, label, cfg, _gen(4))
    changed = [not torch.equal(out_image[b], image[b]) for b in range(2)]
    unchanged_labels = [torch.equal(out_label[b], label[b]) for b in range(2)]
    assert changed.count(True) == 1  # this seed draws the transform for exactly one sample
    assert unchanged_labels[changed.index(False)]


def test_intensity_transforms_keep_values_finite_and_in_range() -> None:
    image, label = _batch()
    out, _ = augment_batch(image, label, _config(contrast_prob=1.0), _gen(8))
    assert torch.isfinite(out).all() and not torch.equal(out, image)
    low, high = image.amin((2, 3, 4)), image.amax((2, 3, 4))
    assert (out.amin((2, 3, 4)) >= low - 1e-6).all() and (out.amax((2, 3, 4)) <= high + 1e-6).all()
    for name in ("gamma_prob", "gamma_invert_prob"):  # nnU-Net keeps mean and std, not range
        out, _ = augment_batch(image, label, _config(**{name: 1.0}), _gen(8))
        assert torch.isfinite(out).all() and not torch.equal(out, image)
        torch.testing.assert_close(out.mean((2, 3, 4)), image.mean((2, 3, 4)))
        torch.testing.assert_close(out.std((2, 3, 4)), image.std((2, 3, 4)))
    for name in ("noise_prob", "blur_prob", "brightness_prob", "lowres_prob"):
        cfg = _config(**{name: 1.0}).model_copy(
            update={"blur_channel_prob": 1.0, "lowres_channel_prob": 1.0}
        )
        out, _ = augment_batch(image, label, cfg, _gen(9))
        assert torch.isfinite(out).all() and not torch.equal(out, image)
    flat = torch.full((2, 3, 16, 16, 16), 0.25)
    cfg = _config(gamma_prob=1.0, gamma_invert_prob=1.0, contrast_prob=1.0)
    out, _ = augment_batch(flat, label, cfg, _gen(10))
    torch.testing.assert_close(out, flat)  # constant channels have no contrast or gamma


def test_inverted_gamma_bends_the_bright_end() -> None:
    x = torch.linspace(0, 1, 11).view(1, 1, 11, 1)
    gamma = torch.tensor(2.0).view(1, 1, 1, 1)
    plain = adjust_gamma(x, gamma)
    inverted = adjust_gamma(x, gamma, invert=True)
    torch.testing.assert_close(plain, x**2)  # dark values pushed down
    torch.testing.assert_close(inverted, 1 - (1 - x) ** 2)  # bright values pushed up
    kept = adjust_gamma(x, gamma, retain_stats=True)
    torch.testing.assert_close((kept.mean(), kept.std()), (x.mean(), x.std()))


def test_bg_contrast_draws_below_and_above_one_equally() -> None:
    like = torch.zeros(1)
    draws = augment_module._bg_contrast((0.7, 1.5), (20000,), _gen(0), like)
    assert float(draws.min()) >= 0.7 and float(draws.max()) <= 1.5
    assert abs(float((draws < 1).float().mean()) - 0.5) < 0.02  # plain uniform: 0.375
    above = augment_module._bg_contrast((1.1, 1.5), (1000,), _gen(0), like)
    assert float(above.min()) >= 1.1


def test_low_resolution_keeps_zoom_1_and_the_kept_axis() -> None:
    x = torch.rand(1, 2, 8, 8, 6, generator=_gen(0))
    torch.testing.assert_close(simulate_low_resolution(x, [[1.0, None]], None), x)
    halved = simulate_low_resolution(x, [[0.5, None]], None)
    assert not torch.equal(halved[0, 0], x[0, 0]) and torch.equal(halved[0, 1], x[0, 1])
    # slices constant in-plane, different along Z: in-plane down/up-sampling changes nothing
    layered = torch.arange(6.0).view(1, 1, 1, 1, 6).expand(1, 1, 8, 8, 6).contiguous()
    torch.testing.assert_close(simulate_low_resolution(layered, [[0.5]], 2), layered)
    assert not torch.equal(simulate_low_resolution(layered, [[0.5]], None), layered)


def test_low_resolution_by_hand() -> None:
    # 4 -> 2 voxels by nearest-exact picks voxels 1 and 3; bilinear back (half-pixel centres)
    x = torch.tensor([0.0, 10.0, 20.0, 30.0]).view(1, 1, 1, 4).expand(1, 1, 2, 4).contiguous()
    out = simulate_low_resolution(x, [[0.5]], None)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([10.0, 15.0, 25.0, 30.0]))


def test_blur_touches_the_chosen_channels_along_each_axis_by_its_own_sigma() -> None:
    spike = torch.zeros(1, 1, 9, 9, 9)
    spike[0, 0, 4, 4, 4] = 1.0
    sigma = torch.tensor([[[1.0, 1e-3, 1e-3]]])  # blur along axis 0 only
    out = gaussian_blur(spike, sigma, max_sigma=1.0)
    assert float(out[0, 0, :, 4, 4].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(out[0, 0, 4, 3, 4]) == pytest.approx(0.0, abs=1e-6)
    image, label = _batch()
    none = _config(blur_prob=1.0).model_copy(update={"blur_channel_prob": 0.0})
    assert torch.equal(augment_batch(image, label, none, _gen(1))[0], image)


def test_gaussian_blur_preserves_constants_and_mass() -> None:
    flat = torch.full((2, 2, 10, 10, 10), 3.0)
    sigma = torch.tensor([[0.5, 1.0], [0.7, 0.9]])
    torch.testing.assert_close(gaussian_blur(flat, sigma, max_sigma=1.0), flat)
    spike = torch.zeros(1, 1, 15, 15)
    spike[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(spike, torch.tensor([[1.0]]), max_sigma=1.0)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 7, 7] < 0.2 and blurred[0, 0, 7, 8] == blurred[0, 0, 8, 7]


def test_bad_batch_raises() -> None:
    image, label = _batch()
    with pytest.raises(InputError, match=r"augment_batch: expected image \(B, C, \*S\)"):
        augment_batch(image, label[:, :4], AugmentConfig(), _gen())
    with pytest.raises(InputError, match=r"expected a float image and an int64 or uint8 label"):
        augment_batch(image, label.to(torch.int32), AugmentConfig(), _gen())


def test_gaussian_blur_mirrors_the_border_as_batchgeneratorsv2_does() -> None:
    """Beyond the border the image is mirrored without repeating the edge (numpy's and torch's
    ``reflect``), as batchgeneratorsv2's ``blur_dimension`` pads: a ramp along one axis,
    blurred, matches the same 1-D kernel over ``np.pad(..., mode="reflect")`` (side by side
    with batchgeneratorsv2 0.3.6 on random volumes at sigma 1: max abs difference 0.0)."""
    ramp = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(1, 1, 8, 3, 3).contiguous()
    out = gaussian_blur(ramp, torch.tensor([[[1.0, 1.0, 1.0]]]), max_sigma=1.0)
    offsets = np.arange(-3, 4)
    kernel = np.exp(-0.5 * offsets**2)
    kernel /= kernel.sum()
    expected = np.convolve(np.pad(np.arange(8.0), 3, mode="reflect"), kernel, mode="valid")
    np.testing.assert_allclose(out[0, 0, :, 1, 1].numpy(), expected, rtol=0, atol=1e-5)
    # voxel 0 sees 3, 2, 1 | 0 | 1, 2, 3: 0.73 (repeating the edge, 0, 0, 0 | 0 | 1, 2, 3: 0.36)
    assert out[0, 0, 0, 1, 1] == pytest.approx(0.726, abs=0.005)
    thin = torch.rand(1, 1, 6, 6, 2)  # an axis of 2 voxels cannot be mirrored by 3: repeated
    assert torch.isfinite(gaussian_blur(thin, torch.ones(1, 1, 3), max_sigma=1.0)).all()


def test_gaussian_blur_wider_window_matches_up_to_the_3_sigma_tail() -> None:
    """A window sized for ``max_sigma`` above a sample's sigma adds only the kernel's weights
    beyond 3 sigma: for sigma 1 (radius 3 vs 6) each 1-D kernel moves by their mass, 2.7e-4
    (L1 change 2x that), so three passes move any voxel by < 3 * 5.4e-4 * max|x|."""
    x = torch.rand(2, 2, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([[1.0, 0.5], [0.8, 1.0]])
    exact = gaussian_blur(x, sigma, max_sigma=1.0)
    wide = gaussian_blur(x, sigma, max_sigma=2.0)
    offsets = torch.arange(-6, 7, dtype=torch.float64)
    weights = torch.exp(-0.5 * offsets**2)
    tail = float(weights[offsets.abs() > 3].sum() / weights.sum())  # sigma 1: the largest
    assert tail == pytest.approx(2.7e-4, rel=0.05)
    difference = (wide - exact).abs().max().item()
    assert 0.0 < difference <= 3 * 2 * tail * x.abs().max().item()


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, list[list[int]]]]:
    """Per ``augment_batch`` call: the rows decided for each transform (``decided``), the rows
    each ``on_rows`` transform was applied to (``applied``) and how many samples were
    resampled (``resampled``)."""
    calls: list[dict[str, list[list[int]]]] = []
    decide, on_rows, spatial = (
        augment_module.decide,
        augment_module.on_rows,
        augment_module.spatial_transform,
    )

    def spy_decide(*args: object, **kwargs: object) -> augment_module.Rows:
        rows = decide(*args, **kwargs)  # type: ignore[arg-type]
        calls.append({"decided": [rows.host], "applied": [], "resampled": []})
        return rows

    def spy_on_rows(x: torch.Tensor, rows: object, name: str, fn: object) -> torch.Tensor:
        def wrapped(y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            calls[-1]["applied"].append({name: index.tolist()})
            return fn(y, index)  # type: ignore[operator]

        return on_rows(x, rows, name, wrapped)  # type: ignore[arg-type]

    def spy_spatial(
        image: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls[-1]["resampled"].append([image.shape[0]])
        return spatial(image, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(augment_module, "decide", spy_decide)
    monkeypatch.setattr(augment_module, "on_rows", spy_on_rows)
    monkeypatch.setattr(augment_module, "spatial_transform", spy_spatial)
    return calls


def _runner_epoch(
    batches: int, seed: int, size: int = 4
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The training loop's GPU-augmentation path on CPU tensors: per epoch one generator for
    the parameters and noise, one CPU generator for the decisions, both used batch after batch
    on ``(8, 2, size^3)`` batches."""
    generator, decisions = _gen(seed), torch.Generator().manual_seed(seed + 1)
    data = torch.Generator().manual_seed(99)
    out = []
    for _ in range(batches):
        image = torch.rand(8, 2, size, size, size, generator=data)
        label = torch.randint(0, 4, (8, size, size, size), generator=data)
        out.append(augment_batch(image, label, AugmentConfig(), generator, decisions))
    return out


def test_host_decisions_reproduce_and_match_the_configured_probabilities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fixed seeds reproduce every batch; each transform is applied to exactly the samples
    decided for it, as often as its probability says (within 4 binomial standard errors)."""
    first, second = _runner_epoch(6, seed=3), _runner_epoch(6, seed=3)
    for (a_image, a_label), (b_image, b_label) in zip(first, second, strict=True):
        assert torch.equal(a_image, b_image) and torch.equal(a_label, b_label)
    other = _runner_epoch(6, seed=4)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))

    calls = _spy(monkeypatch)
    batches, batch = 300, 8
    _runner_epoch(batches, seed=5, size=2)
    assert len(calls) == batches
    counts: dict[str, int] = {}
    for call in calls:
        decided = call["decided"][0]
        applied = {name: rows for entry in call["applied"] for name, rows in entry.items()}
        for name, rows in decided.items():
            counts[name] = counts.get(name, 0) + len(rows)
            if name not in ("rotation", "scale") and not name.startswith("spatial"):
                assert applied.get(name, []) == rows, name  # skipped exactly when none drew
        resampled = [len(decided["spatial"])] if decided["spatial"] else []
        assert [n for (n,) in call["resampled"]] == resampled
    cfg = AugmentConfig()
    for name, count in counts.items():
        if name.startswith("spatial"):
            continue
        p = cfg.flip_prob if name.startswith("flip") else getattr(cfg, f"{name}_prob")
        n = batches * batch
        assert abs(count / n - p) <= 4 * math.sqrt(p * (1 - p) / n), (name, count / n, p)


def test_decisions_depend_on_the_host_generator_only() -> None:
    """Flips depend on the decisions alone: the device generator's seed does not change them,
    the host generator's does; the CPU workers' path (no host generator) still works."""
    image, label = _batch()
    cfg = _config(flip_prob=0.5)
    a = augment_batch(image, label, cfg, _gen(1), torch.Generator().manual_seed(7))
    b = augment_batch(image, label, cfg, _gen(2), torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    outputs = [augment_batch(image, label, cfg, _gen(1), _gen(s))[0] for s in range(8)]
    assert any(not torch.equal(outputs[0], out) for out in outputs[1:])
    assert torch.equal(augment_batch(image, label, cfg, _gen(7))[0], a[0])  # same decisions


@pytest.mark.cuda
def test_gpu_augmentation_never_syncs_the_host() -> None:
    """Under ``set_sync_debug_mode("error")`` any op that makes the host wait for the GPU
    (a read-back such as ``.cpu()`` or ``.item()``, or a copy from pageable host memory)
    raises; the augmentation of a CUDA batch must run through it for any mix of decisions.
    The decisions are device-independent: a flip-only config gives the CPU result."""
    device = torch.device("cuda")
    image, label = (t.to(device) for t in _batch())
    cfg = AugmentConfig(**dict.fromkeys(PROBS, 0.5))
    generator = torch.Generator(device).manual_seed(0)
    decisions = torch.Generator().manual_seed(0)
    augment_batch(image, label, cfg, generator, decisions)  # warm-up: first-call setup
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError):
            torch.ones(1, device=device).cpu()  # the mode is on: a read-back raises
        for _ in range(6):  # all, some and none of the samples per transform
            out_image, out_label = augment_batch(image, label, cfg, generator, decisions)
        out_2d = augment_batch(image[:, :, 0], label[:, 0], cfg, generator, decisions)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    assert torch.isfinite(out_image).all() and out_label.dtype == label.dtype
    assert out_2d[0].shape == image[:, :, 0].shape
    flips = _config(flip_prob=0.5)
    on_gpu = augment_batch(image, label, flips, generator, torch.Generator().manual_seed(3))
    on_cpu = augment_batch(*_batch(), flips, _gen(0), torch.Generator().manual_seed(3))
    assert torch.equal(on_gpu[0].cpu(), on_cpu[0]) and torch.equal(on_gpu[1].cpu(), on_cpu[1])
    with pytest.raises(InputError, match="need a CPU generator"):
        augment_batch(image, label, cfg, generator)


def test_low_resolution_rounds_its_size_as_nnunet_does() -> None:
    # 65 x 0.7 is 45.5 in exact arithmetic; nnU-Net's float32 zoom gives 45.4999..., so 45
    # voxels, and a downsampled size of 45 then differs from 46 at the border
    x = torch.arange(65.0).view(1, 1, 1, 65).expand(1, 1, 3, 65).contiguous()
    out = simulate_low_resolution(x, [[0.7]], 0)
    low = F.interpolate(x, size=[3, 45], mode="nearest-exact")
    expected = F.interpolate(low, size=[3, 65], mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)
