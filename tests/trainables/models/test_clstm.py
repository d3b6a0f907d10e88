"""C-LSTM: recurrence over slices, checkpointing (equivalence, memory), two-stage training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.errors import InputError
from trainables.models import CLSTMConfig, ConvLSTMUNet, UNetConfig, build_model

IN, OUT, HIDDEN = 2, 3, 4


def _model(checkpointing: bool = True, seed: int = 0) -> ConvLSTMUNet:
    torch.manual_seed(seed)
    cfg = CLSTMConfig(
        unet=UNetConfig(filters=(4, 8, 16)), hidden_channels=HIDDEN, checkpointing=checkpointing
    )
    model = build_model(cfg, IN, OUT)
    assert isinstance(model, ConvLSTMUNet)
    return model


def _volume(z: int = 5, xy: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(2, IN, xy, xy, z, generator=generator)


def _run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_output_is_a_volume_of_logits() -> None:
    x = _volume(z=3)
    out = _model()(x)
    assert out.shape == (2, OUT, 16, 16, 3)


def test_checkpointing_gives_identical_outputs_gradients_and_norm_statistics() -> None:
    x = _volume()
    plain, checkpointed = _model(checkpointing=False), _model(checkpointing=True)
    out_plain, grads_plain = _run(plain, x)
    out_ckpt, grads_ckpt = _run(checkpointed, x)
    assert torch.allclose(out_plain, out_ckpt, atol=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name, grad in grads_plain.items():
        assert torch.allclose(grad, grads_ckpt[name], rtol=1e-4, atol=1e-6), name
    # The backward pass re-runs every slice; batch norm must not count those slices twice.
    buffers_ckpt = dict(checkpointed.named_buffers())
    for name, buffer in plain.named_buffers():
        assert torch.equal(buffer, buffers_ckpt[name]), name


def _saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward pass after one forward (the activation memory)."""
    total = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return total


def test_checkpointing_keeps_only_each_steps_inputs() -> None:
    z, xy = 6, 16
    x = _volume(z=z, xy=xy)
    with_ckpt = _saved_bytes(_model(checkpointing=True), x)
    without = _saved_bytes(_model(checkpointing=False), x)
    # Per slice only the step's inputs survive: x_z (IN channels), h and c (HIDDEN each), fp32.
    assert with_ckpt == z * 2 * (IN + 2 * HIDDEN) * xy * xy * 4
    assert without > 10 * with_ckpt  # every U-Net activation of every slice


def test_recurrence_runs_forward_over_the_last_axis() -> None:
    model = _model().eval()
    x = _volume(z=4)
    later = x.clone()
    later[..., 3] += 1.0
    earlier = x.clone()
    earlier[..., 0] += 1.0
    with torch.no_grad():
        base, changed_late, changed_early = model(x), model(later), model(earlier)
    assert torch.equal(base[..., :3], changed_late[..., :3])  # unidirectional: no look-ahead
    assert not torch.allclose(base[..., 3], changed_late[..., 3])
    assert not torch.allclose(base[..., 2], changed_early[..., 2])  # the state carries context


def test_unet_is_a_named_submodule_that_can_be_frozen() -> None:
    model = _model()
    model.unet.requires_grad_(False)
    model(_volume(z=2)).sum().backward()
    assert all(p.grad is None for p in model.unet.parameters())
    assert model.hidden_conv.weight.grad is not None and model.head.weight.grad is not None


def test_load_pretrained_unet_from_a_slice_model() -> None:
    model = _model()
    slice_model = build_model(CLSTMConfig(unet=UNetConfig(filters=(4, 8, 16))).unet, IN, OUT)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    skipped = model.load_pretrained_unet(slice_model.state_dict())
    assert skipped == ["heads.0.weight", "heads.0.bias"]  # OUT classes vs 4 * HIDDEN gates
    loaded = model.unet.state_dict()
    for key, value in slice_model.state_dict().items():
        if key in skipped:
            assert torch.equal(loaded[key], before[key])
        else:
            assert torch.equal(loaded[key], value), key


def test_load_pretrained_unet_rejects_other_filters() -> None:
    other = build_model(UNetConfig(filters=(8, 16, 32), upsample="nearest"), IN, OUT)
    with pytest.raises(InputError, match=r"model.unet: pretrained U-Net does not fit .*encoder"):
        _model().load_pretrained_unet(other.state_dict())


def test_volume_shape_errors() -> None:
    with pytest.raises(InputError, match=r"spatial shape \(10, 16\) must be divisible by 4"):
        _model()(torch.randn(1, IN, 10, 16, 2))
    with pytest.raises(InputError, match=r"expected a \(B, C, 3 spatial axes\) tensor"):
        _model()(torch.randn(1, IN, 16, 16))


def test_forget_gate_starts_open() -> None:
    bias = _model().hidden_conv.bias.detach()
    assert torch.all(bias[HIDDEN : 2 * HIDDEN] == 1.0)
    assert torch.all(bias[:HIDDEN] == 0.0)
