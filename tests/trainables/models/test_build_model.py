"""build_model: every kind in 2-D and 3-D, the deep-supervision contract, describe/count."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.errors import InputError
from trainables.models import (
    AttentionUNetConfig,
    CLSTMConfig,
    ModelConfig,
    PlainUNetConfig,
    ResidualUNetConfig,
    UNet,
    UNetConfig,
    build_model,
    count_parameters,
    describe,
)

SIZE = 16


def _toy_configs(dims: int) -> list[ModelConfig]:
    return [
        ResidualUNetConfig(
            spatial_dims=dims, filters=(4, 8, 16), norm="group", group_norm_groups=4
        ),
        ResidualUNetConfig(spatial_dims=dims, filters=(4, 8, 16), norm="batch"),
        AttentionUNetConfig(spatial_dims=dims, filters=(4, 8, 16, 32), deep_supervision=0),
        AttentionUNetConfig(
            spatial_dims=dims, filters=(4, 8, 16, 32), deep_supervision=0, norm="batch"
        ),
        PlainUNetConfig(spatial_dims=dims, base_filters=4, num_stages=4, deep_supervision=False),
        PlainUNetConfig(
            spatial_dims=dims,
            base_filters=4,
            num_stages=4,
            norm="group",
            group_norm_groups=2,
            deep_supervision=False,
        ),
        UNetConfig(spatial_dims=dims, filters=(4, 8, 16), norm="none"),
        UNetConfig(spatial_dims=dims, filters=(4, 8, 16), upsample="nearest"),
    ]


def _loss(out: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    outs = out if isinstance(out, list) else [out]
    return sum((o.float().square().mean() for o in outs), torch.zeros(()))


@pytest.mark.parametrize("dims", [2, 3])
def test_every_kind_runs_forward_and_backward(dims: int) -> None:
    torch.manual_seed(0)
    for cfg in _toy_configs(dims):
        model = build_model(cfg, in_channels=2, out_channels=3)
        x = torch.randn(2, 2, *([SIZE] * dims))
        out = model(x)
        assert isinstance(out, torch.Tensor), describe(cfg)
        assert out.shape == (2, 3, *([SIZE] * dims)), describe(cfg)
        _loss(out).backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"{describe(cfg)}: no gradient for {missing}"


def test_clstm_builds_and_runs() -> None:
    torch.manual_seed(0)
    cfg = CLSTMConfig(unet=UNetConfig(filters=(4, 8, 16)), hidden_channels=2)
    model = build_model(cfg, in_channels=2, out_channels=3)
    x = torch.randn(1, 2, SIZE, SIZE, 3)
    out = model(x)
    assert out.shape == (1, 3, SIZE, SIZE, 3)
    _loss(out).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("heads", [1, 2])
def test_attention_unet_deep_supervision_contract(dims: int, heads: int) -> None:
    cfg = AttentionUNetConfig(spatial_dims=dims, filters=(4, 8, 16, 32), deep_supervision=heads)
    model = build_model(cfg, in_channels=1, out_channels=3)
    x = torch.randn(2, 1, *([SIZE] * dims))
    outs = model.train()(x)
    assert isinstance(outs, list)
    assert [tuple(o.shape) for o in outs] == [
        (2, 3, *([SIZE // 2**k] * dims)) for k in range(1 + heads)
    ]  # highest resolution first
    _loss(outs).backward()
    with torch.no_grad():
        single = model.eval()(x)
    assert isinstance(single, torch.Tensor)
    assert single.shape == (2, 3, *([SIZE] * dims))
    assert torch.allclose(single, outs[0].detach(), atol=1e-5)  # same main head in both modes


def test_plain_unet_deep_supervision_heads_like_nnunet() -> None:
    cfg = PlainUNetConfig(base_filters=2, num_stages=5, max_filters=8)
    model = build_model(cfg, in_channels=1, out_channels=2)
    assert isinstance(model, UNet)
    assert [m.out_channels for m in model.encoder.modules() if isinstance(m, nn.Conv3d)][::2] == [
        2, 4, 8, 8, 8,
    ]  # fmt: skip
    assert len(model.heads) == cfg.num_stages - 2 == 3
    outs = model.train()(torch.randn(1, 1, 32, 32, 32))
    assert [o.shape[-1] for o in outs] == [32, 16, 8]  # all but the two lowest resolutions (4, 2)
    assert model.encoder.stages[1][0][0].stride == (2, 2, 2)  # strided-conv down-sampling


THICK_SLICES = {  # an nnU-Net-like plan for thick slices: Z kept and 1-wide in early stages
    "strides": [[1, 1, 1], [2, 2, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]],
    "kernel_sizes": [[3, 3, 1], [3, 3, 1], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
}


def test_plain_unet_takes_nnunets_per_stage_strides_and_kernels() -> None:
    cfg = PlainUNetConfig(base_filters=2, num_stages=5, max_filters=8, **THICK_SLICES)
    assert cfg.divisor() == (16, 16, 4)
    model = build_model(cfg, in_channels=1, out_channels=2).train()
    outs = model(torch.randn(1, 1, 32, 32, 8))
    assert [tuple(o.shape[2:]) for o in outs] == [(32, 32, 8), (16, 16, 8), (8, 8, 8)]
    first = model.encoder.stages[0][0][0]
    assert first.kernel_size == (3, 3, 1) and first.padding == (1, 1, 0)
    assert model.encoder.stages[1][0][0].stride == (2, 2, 1)
    ups = [stage.up for stage in model.decoder]  # deepest first
    assert [u.stride for u in ups] == [(2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1)]
    assert model.decoder[-1].block[0][0].kernel_size == (3, 3, 1)  # the level's own kernel
    model.eval()
    assert model(torch.randn(1, 1, 32, 16, 8)).shape == (1, 2, 32, 16, 8)
    with pytest.raises(InputError, match=r"\(16, 16, 6\) must be divisible by \[16, 16, 4\]"):
        model(torch.randn(1, 1, 16, 16, 6))


def test_the_default_plan_written_out_builds_the_default_network() -> None:
    plain = PlainUNetConfig(base_filters=2, num_stages=4, max_filters=8)
    written = PlainUNetConfig(
        base_filters=2,
        num_stages=4,
        max_filters=8,
        strides=[[1, 1, 1]] + [[2, 2, 2]] * 3,
        kernel_sizes=[[3, 3, 3]] * 4,
    )
    assert written.divisor() == plain.divisor() == (8, 8, 8)
    torch.manual_seed(0)
    a = build_model(plain, 1, 2).eval()
    torch.manual_seed(0)
    b = build_model(written, 1, 2).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    assert [k for k in a.state_dict()] == [k for k in b.state_dict()]
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "plan, message",
    [
        ({"strides": [[1, 1, 1], [2, 2, 2]]}, "strides: 2 entries for num_stages 3: give one "),
        ({"strides": [[1, 1, 1], [2, 2], [2, 2, 2]]}, "strides: each entry needs 3 values (spa"),
        ({"strides": [[2, 2, 2], [2, 2, 2], [2, 2, 2]]}, "strides: the first stage works at fu"),
        ({"strides": [[1, 1, 1], [3, 2, 2], [2, 2, 2]]}, "strides.1.0: 3 is not one of 1, 2"),
        ({"kernel_sizes": [[3, 3, 3], [3, 3, 2], [3, 3, 3]]}, "kernel_sizes: every kernel mus"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(plan: dict, message: str) -> None:
    from trainables.config import validate_config

    with pytest.raises(InputError) as err:
        validate_config(PlainUNetConfig, {"num_stages": 3, **plan}, "model")
    assert message in str(err.value)


def test_our_anisotropic_plan_is_nnunets_network() -> None:
    """Against dynamic-network-architectures' PlainConvUNet (nnU-Net v2's own) built from the
    same plan: the same convolution weights (kernel per axis) and output shapes; nnU-Net also
    builds the lowest decoder level's 1x1 output, which it weights 0 and ablate omits."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    cfg = PlainUNetConfig(base_filters=2, num_stages=5, max_filters=8, **THICK_SLICES)
    ours = build_model(cfg, in_channels=1, out_channels=2).train()
    theirs = unet.PlainConvUNet(
        input_channels=1, n_stages=5, features_per_stage=list(cfg.filters), conv_op=nn.Conv3d,
        kernel_sizes=THICK_SLICES["kernel_sizes"], strides=THICK_SLICES["strides"],
        n_conv_per_stage=[2] * 5, num_classes=2, n_conv_per_stage_decoder=[2] * 4,
        conv_bias=True, norm_op=nn.InstanceNorm3d, norm_op_kwargs={"affine": True},
        nonlin=nn.LeakyReLU, deep_supervision=True,
    ).train()  # fmt: skip

    def conv_shapes(model: nn.Module) -> list[tuple[int, ...]]:
        convs = (nn.Conv3d, nn.ConvTranspose3d)
        return sorted(tuple(m.weight.shape) for m in model.modules() if isinstance(m, convs))

    heads = [tuple(h.weight.shape) for h in ours.heads]
    assert heads == [tuple(h.weight.shape) for h in theirs.decoder.seg_layers][::-1][:3]
    unused = tuple(theirs.decoder.seg_layers[0].weight.shape)  # the lowest level's output
    assert conv_shapes(ours) == _without(conv_shapes(theirs), unused)
    x = torch.randn(1, 1, 32, 32, 8)
    theirs_out = [tuple(o.shape) for o in theirs(x)][: len(ours(x))]
    assert [tuple(o.shape) for o in ours(x)] == theirs_out


def _without(items: list, item: object) -> list:
    """``items`` less one occurrence of ``item``."""
    rest = list(items)
    rest.remove(item)
    return rest


def test_plain_unet_without_deep_supervision_returns_one_tensor_in_training() -> None:
    cfg = PlainUNetConfig(base_filters=2, num_stages=4, deep_supervision=False)
    out = build_model(cfg, 1, 2).train()(torch.randn(1, 1, 16, 16, 16))
    assert isinstance(out, torch.Tensor)


@pytest.mark.parametrize("norm", ["instance", "batch", "group"])
def test_nnunet_and_fmnet_norms_are_an_axis(norm: str) -> None:
    """nnU-Net's ``norm_op`` and FM-Net's instance norm could not be ablated (audit): the norm
    was fixed to instance in plain_unet and attention_unet."""
    expected = {"instance": nn.InstanceNorm3d, "batch": nn.BatchNorm3d, "group": nn.GroupNorm}
    for cfg in (
        PlainUNetConfig(base_filters=4, num_stages=3, norm=norm, group_norm_groups=2),
        AttentionUNetConfig(filters=(4, 8, 16), deep_supervision=0, norm=norm, group_norm_groups=2),
    ):
        model = build_model(cfg, in_channels=1, out_channels=2)
        norms = {
            type(m)
            for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm)
        }
        assert norms == {expected[norm]}, (cfg.kind, norms)
    with pytest.raises(ValueError, match=r"group_norm_groups=3 must divide every entry"):
        PlainUNetConfig(base_filters=4, num_stages=3, norm="group", group_norm_groups=3)


def test_attention_gates_add_parameters() -> None:
    with_gates = AttentionUNetConfig(filters=(4, 8, 16), deep_supervision=0, bottleneck_depth=0)
    without = with_gates.model_copy(update={"attention": False})
    model = build_model(with_gates, 1, 2)
    n_gated = count_parameters(model)
    assert n_gated > count_parameters(build_model(without, 1, 2))
    assert sum(isinstance(m, nn.Module) and m.gate is not None for m in model.decoder) == 2


def test_bottleneck_depth_adds_blocks_at_the_lowest_resolution() -> None:
    counts, depths = [], []
    for depth in (0, 1, 2):
        cfg = AttentionUNetConfig(filters=(4, 8, 16), deep_supervision=0, bottleneck_depth=depth)
        model = build_model(cfg, 1, 2)
        convs = [m for m in model.bottleneck.modules() if isinstance(m, nn.Conv3d)]
        assert all(c.in_channels == c.out_channels == 16 for c in convs)
        depths.append(len(convs))
        counts.append(count_parameters(model))
    assert depths == [0, 2, 4]  # each bottleneck layer is a double-conv block (FM-Net's code)
    assert counts[0] < counts[1] < counts[2]


def test_fm_net_bottleneck_dominates_its_parameters() -> None:
    # FM-Net's final 3-D model: two bottleneck blocks of two 3x3x3 512->512 convs (+ norms);
    # the paper notes deeper bottlenecks inflate the parameter count "to a great extent".
    model = build_model(AttentionUNetConfig(), in_channels=4, out_channels=3)
    assert isinstance(model, UNet)
    assert count_parameters(model.bottleneck) == 4 * (512 * 512 * 27 + 2 * 512)
    assert count_parameters(model.bottleneck) > count_parameters(model) / 2


def test_outputs_are_logits_not_probabilities() -> None:
    torch.manual_seed(0)
    model = build_model(UNetConfig(filters=(4, 8), norm="none"), 1, 2).eval()
    out = model(torch.randn(2, 1, 8, 8) * 10)
    assert out.min() < 0 or out.max() > 1


def test_runs_channels_last_3d_and_autocast() -> None:
    cfg = AttentionUNetConfig(filters=(4, 8, 16), deep_supervision=1, bottleneck_depth=1)
    model = build_model(cfg, 2, 3).to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 2, 8, 8, 8).to(memory_format=torch.channels_last_3d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = model(x)
    assert [o.shape[-1] for o in outs] == [8, 4]
    _loss(outs).backward()


def test_input_shape_errors() -> None:
    model = build_model(UNetConfig(filters=(4, 8, 16)), 1, 2)
    with pytest.raises(
        InputError, match=r"model input: spatial shape \(12, 18\) must be divisible by 4"
    ):
        model(torch.randn(1, 1, 12, 18))
    with pytest.raises(InputError, match="expected a \\(B, C, 2 spatial axes\\) tensor"):
        model(torch.randn(1, 1, 8, 8, 8))
    with pytest.raises(InputError, match="model: out_channels must be strictly positive, got 0"):
        build_model(UNetConfig(), 1, 0)


def test_describe_and_count() -> None:
    text = describe(AttentionUNetConfig())
    assert text.startswith("attention_unet 3-D 32-64-128-256-512, instance norm")
    assert "attention gates" in text and "bottleneck 2" in text and "deep supervision +2" in text
    assert describe(CLSTMConfig()).startswith("clstm (hidden 8, checkpointed) over unet 2-D")
    model = build_model(UNetConfig(filters=(4, 8)), 1, 2)
    total = count_parameters(model)
    model.encoder.requires_grad_(False)
    frozen = sum(p.numel() for p in model.encoder.parameters())
    assert count_parameters(model, trainable_only=True) == total - frozen
