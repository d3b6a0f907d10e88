"""``benchmarks/bench_vs_nnunet.py`` and its nnU-Net reference step, at toy size on CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("dynamic_network_architectures")  # benchmark-only dependency

from benchmarks import bench_vs_nnunet as bench
from benchmarks.nnunet_reference import (
    DCAndBCELoss,
    build_reference,
    deep_supervision_weights,
    plan_kwargs,
    region_targets,
)
from trainables.data.labels import INTERNAL_BRATS
from trainables.engine.bench import StepOptions
from trainables.errors import InputError

REPO = Path(__file__).resolve().parents[2]
# 6 stages (the BraTS depth) at toy widths; 64x32x32 leaves a 2x1x1 bottleneck.
TOY = ["--patch", "64", "32", "32", "--batch", "1", "--device", "cpu"]
TOY += ["--set", "model.base_filters=2", "--set", "model.max_filters=4"]


def test_plan_is_the_brats_3d_fullres_plan() -> None:
    kwargs = plan_kwargs()
    assert kwargs["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kwargs["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert kwargs["kernel_sizes"] == [[3, 3, 3]] * 6
    assert kwargs["conv_op"] is torch.nn.Conv3d and kwargs["conv_bias"] is True
    assert kwargs["norm_op"] is torch.nn.InstanceNorm3d
    assert kwargs["norm_op_kwargs"] == {"eps": 1e-5, "affine": True}
    assert kwargs["nonlin"] is torch.nn.LeakyReLU and kwargs["deep_supervision"] is True


def test_reference_deep_supervision_weights_follow_build_loss() -> None:
    # 5 decoder outputs weighted 1, 1/2, 1/4, 1/8 and 0, normalised: [8, 4, 2, 1, 0] / 15.
    assert deep_supervision_weights(6) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])


def test_reference_loss_by_hand() -> None:
    # logits 0: BCE ln 2; nnU-Net's Dice term is -mean Dice = -(0.6 + 0.5 + 1/3) / 3 on the
    # regions of [[0, 1], [2, 3]] (WT 3 voxels, TC 2, ET 1; sum p = 2 per region).
    target = region_targets(torch.tensor([[[0, 1], [2, 3]]]), INTERNAL_BRATS, 1)[0]
    assert target.dtype == torch.bool and target.shape == (1, 3, 2, 2)
    loss = DCAndBCELoss()(torch.zeros(1, 3, 2, 2), target)
    assert loss.item() == pytest.approx(math.log(2) - (0.6 + 0.5 + 1 / 3) / 3, abs=1e-5)


def test_region_targets_downsample_with_nearest_exact() -> None:
    label = torch.arange(4).repeat_interleave(2).reshape(1, 8, 1).expand(1, 8, 4).contiguous()
    targets = region_targets(label, INTERNAL_BRATS, 3)
    assert [tuple(t.shape) for t in targets] == [(1, 3, 8, 4), (1, 3, 4, 2), (1, 3, 2, 1)]
    # WT (codes 1-3) along the first axis: 0 0 1 1 1 1 1 1; nearest-exact at scale 1/4 samples
    # source rows 2 and 6 (nearest would sample 0 and 4).
    assert targets[2][0, 0, :, 0].tolist() == [True, True]


def _toy_args(*extra: str) -> object:
    return bench.parse_args([*TOY, *extra])


def test_our_loss_equals_nnunets_plus_one_on_identical_logits() -> None:
    args = _toy_args()
    cfg = bench.load_trial(args)
    batch = bench.synthetic_batch(cfg, torch.device("cpu"))
    reference, ours = bench.build_sides(cfg, StepOptions(), False, batch)
    parity = bench.loss_parity(reference, ours, cfg.model.deep_supervision_outputs)
    assert parity == pytest.approx(1.0, abs=1e-5)


def test_synthetic_batch_is_block_constant_and_learnable() -> None:
    cfg = bench.load_trial(_toy_args())
    image, label = bench.synthetic_batch(cfg, torch.device("cpu"))
    assert image.shape == (1, 4, 64, 32, 32) and label.shape == (1, 64, 32, 32)
    assert set(label.unique().tolist()) <= {0, 1, 2, 3}
    block = label[0, :8, :8, :8]  # 4 weighted outputs: blocks of 2**3 voxels
    assert (block == block[0, 0, 0]).all()


def test_reference_step_trains_on_cpu() -> None:
    image, label = torch.randn(1, 4, 32, 16, 16), torch.randint(0, 4, (1, 32, 16, 16))
    step = build_reference(image, label, INTERNAL_BRATS, (2, 4, 4, 4))  # 4 stages: fast
    assert step.grad_scaler is None  # nnU-Net: no scaler off CUDA
    assert len(step.target) == 3  # one per decoder output, the lowest weighted 0
    before = [p.detach().clone() for p in step.network.parameters()]
    losses = [step.step() for _ in range(2)]
    assert all(isinstance(x, float) and math.isfinite(x) for x in losses)
    changed = [
        not torch.equal(a, b) for a, b in zip(before, step.network.parameters(), strict=True)
    ]
    assert any(changed)


def test_bad_set_and_non_nnunet_trials_are_refused(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(InputError, match=r"--set: expected KEY=VALUE"):
        bench.load_trial(_toy_args("--set", "model.base_filters"))
    btrseg = str(REPO / "search_spaces" / "base" / "btrseg.yaml")
    assert bench.main(["--trial", btrseg, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "btrseg.yaml" in err and "model.kind plain_unet" in err and "residual_unet" in err
    strides = "model.strides=[[1,1,1],[2,2,2],[2,2,2],[2,2,2],[2,2,2],[2,2,1]]"
    with pytest.raises(InputError, match=r"nnU-Net's isotropic BraTS plan .* leave model.strid"):
        bench.load_trial(_toy_args("--set", strides))


@pytest.mark.slow
def test_benchmark_runs_at_toy_size_and_prints_the_ratio(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "result.json"
    small = ["--patch", "32", "16", "16", "--batch", "1", "--device", "cpu"]
    small += ["--set", "model.num_stages=4", "--set", "model.base_filters=2"]
    argv = [*small, "--steps", "2", "--warmup", "1", "--block", "1", "--train-steps", "2"]
    assert bench.main([*argv, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ratio nnU-Net/ours (step time):" in printed
    assert "loss parity on identical logits: ours - nnU-Net = 1.000000" in printed
    result = json.loads(out.read_text())
    assert len(result["nnunet"]["block_ms"]) == len(result["ours"]["block_ms"]) == 2
    assert result["ratio_nnunet_over_ours"] == pytest.approx(
        result["nnunet"]["step_ms_median"] / result["ours"]["step_ms_median"], rel=1e-2
    )
    assert result["nnunet"]["tflop_per_step"] >= 0 and result["environment"]["torch"]
    assert len(result["numerics"]["ours"]) == 2
