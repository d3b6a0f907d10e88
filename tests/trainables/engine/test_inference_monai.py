"""``sliding_window_logits`` against MONAI's ``sliding_window_inference`` (overlap 0.5).

Both pad a volume smaller than the window symmetrically with zeros, accumulate weighted window
logits and divide by the accumulated weights; both build the Gaussian as the product of
``exp(-x**2 / (2 sigma**2))`` sampled at the voxel centres, ``x`` measured from ``(size-1)/2``,
``sigma = 0.125 * size``. They differ by design in two places (asserted below):

* Gaussian floor: MONAI clamps the weights to at least 1e-3 (its map is not normalised to a
  peak of 1 for even sizes, so the clamp falls at a slightly different place); ours (nnU-Net v2)
  only replaces zeros, so a window's corners keep weights down to ~1e-10. The two maps are the
  same up to a constant factor wherever MONAI's is above its floor, and window logits that only
  corners reach blend differently near the volume's border.
* Window placement: MONAI steps by ``int(roi * (1 - overlap))`` and clamps the last window to
  the end; ours spreads the same number of windows evenly (nnU-Net). They coincide when
  ``size - roi`` is a multiple of the step.

With matching placement and our weights passed as ``roi_weight_map`` the outputs are equal to
float32 rounding (tolerance 1e-5 absolute on logits of magnitude ~10).
"""

from __future__ import annotations

import pytest
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference

from trainables.engine.inference import gaussian_importance, sliding_window_logits, window_starts
from trainables.models import UNetConfig, build_model

ROI = (32, 32, 32)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = UNetConfig(spatial_dims=3, filters=(4, 8, 16), norm="instance")
    return build_model(cfg, 4, 3).eval()


def _monai(model: torch.nn.Module, image: torch.Tensor, **kwargs: object) -> torch.Tensor:
    with torch.no_grad():
        return sliding_window_inference(image[None], ROI, 4, model, overlap=0.5, **kwargs)[0]


@pytest.mark.parametrize("shape", [(96, 80, 64), (20, 40, 32)])  # placements coincide; padding
def test_same_output_with_matching_placement_and_weights(
    model: torch.nn.Module, shape: tuple[int, int, int]
) -> None:
    image = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    uniform = sliding_window_logits(model, image, ROI, 0.5, gaussian=False, batch_size=4)
    torch.testing.assert_close(uniform, _monai(model, image, mode="constant"), atol=1e-5, rtol=0)
    ours = sliding_window_logits(model, image, ROI, 0.5, gaussian=True, batch_size=4)
    theirs = _monai(model, image, mode="gaussian", roi_weight_map=gaussian_importance(ROI, CPU))
    assert ours.shape == (3, *shape)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("roi", [(32, 32, 32), (33, 24, 17)])
def test_gaussians_agree_up_to_scale_above_monais_floor(roi: tuple[int, ...]) -> None:
    ours = gaussian_importance(roi, CPU)
    theirs = compute_importance_map(roi, mode="gaussian", sigma_scale=0.125, device=CPU)
    scale = theirs.max()  # 1 for odd sizes; the peak falls between voxels for even ones
    torch.testing.assert_close(theirs, (ours * scale).clamp_min(1e-3), atol=1e-6, rtol=1e-5)
    assert ours.min() < 1e-6 < 1e-3 == pytest.approx(theirs.min().item())


def test_monais_own_gaussian_blends_border_windows_differently(model: torch.nn.Module) -> None:
    image = torch.randn(4, 96, 80, 64, generator=torch.Generator().manual_seed(2))
    ours = sliding_window_logits(model, image, ROI, 0.5, gaussian=True, batch_size=4)
    theirs = _monai(model, image, mode="gaussian")
    centre = (slice(None), *(slice(16, s - 16) for s in image.shape[1:]))
    assert (ours - theirs).abs().max() > 1e-2  # the floor matters somewhere...
    agree = (ours.argmax(0) == theirs.argmax(0)).float().mean()
    assert agree > 0.9  # ...but most voxels get the same class
    assert (ours[centre] - theirs[centre]).abs().max() < (ours - theirs).abs().max()


def test_window_placement_differs_unless_the_step_divides_the_span() -> None:
    def monai_starts(size: int) -> list[int]:
        return sorted({s[0].start for s in dense_patch_slices((size,), (32,), (16,))})

    assert window_starts(96, 32, 0.5) == monai_starts(96) == [0, 16, 32, 48, 64]
    assert window_starts(100, 32, 0.5) == [0, 14, 27, 41, 54, 68]  # evenly spread
    assert monai_starts(100) == [0, 16, 32, 48, 64, 68]  # last window clamped to the end
