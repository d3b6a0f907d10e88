"""Memory-efficient C-LSTM (van de Leemput et al., 2018): a 2-D U-Net inside a convolutional LSTM.

The LSTM runs over the slice axis (the last spatial axis, axial for BraTS/CT) in one direction.
The paper replaces the usual input convolution of a ConvLSTM with a 2-D U-Net, so for slice z::

    u_z = unet(x_z)                       # (B, 4*hidden, X, Y): input terms of i, f, o, g
    i, f, o, g = split(u_z + conv(h_{z-1}))   # hidden-to-hidden 3x3 conv W_i..W_c, biases b
    c_z = sigmoid(f) * c_{z-1} + sigmoid(i) * tanh(g)
    h_z = sigmoid(o) * tanh(c_z)

and a 1x1 conv maps ``h_z`` to the slice's logits (the paper's h_z is squashed into (-1, 1); the
head lets the losses see unbounded logits). Each slice step is gradient-checkpointed, so only the
step's inputs and outputs ``(x_z, h, c)`` stay in memory and the U-Net's activations of one slice
at a time are materialised (recomputed in the backward pass).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from trainables.errors import InputError
from trainables.models.blocks import conv_nd
from trainables.models.unet import UNet, check_input_shape


class ConvLSTMUNet(nn.Module):
    """``(B, C, X, Y, Z)`` volume -> logits ``(B, out_channels, X, Y, Z)`` (one tensor, no DS).

    Args:
        unet: the inner 2-D U-Net, built with ``4 * hidden_channels`` output channels. It is the
            named submodule ``unet`` so a trainer can freeze it (``model.unet.requires_grad_``)
            and initialise it from a 2-D slice model (:meth:`load_pretrained_unet`).
        hidden_channels: channels of the LSTM's hidden and cell states.
        out_channels: output classes / regions.
        checkpointing: recompute each slice step in the backward pass instead of storing it.
    """

    def __init__(
        self, unet: UNet, hidden_channels: int, out_channels: int, checkpointing: bool = True
    ) -> None:
        super().__init__()
        if unet.spec.ops.spatial_dims != 2:
            raise ValueError("the C-LSTM's inner U-Net must be 2-D")
        self.unet = unet
        self.hidden_channels = hidden_channels
        self.hidden_conv = conv_nd(2, hidden_channels, 4 * hidden_channels, 3, bias=True)
        self.head = conv_nd(2, hidden_channels, out_channels, 1, bias=True)
        self.checkpointing = checkpointing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x, 3, 1)
        check_input_shape(x[..., 0], 2, self.unet.spec.divisor)
        b, _, nx, ny, nz = x.shape
        h = x.new_zeros((b, self.hidden_channels, nx, ny))
        c = torch.zeros_like(h)
        logits = []
        for z in range(nz):
            if self.checkpointing and torch.is_grad_enabled():
                out, h, c = checkpoint(self._step, x[..., z], h, c, _Calls(), use_reentrant=False)
            else:
                out, h, c = self._step(x[..., z], h, c, _Calls())
            logits.append(out)
        return torch.stack(logits, dim=-1)

    def _step(
        self, xz: torch.Tensor, h: torch.Tensor, c: torch.Tensor, calls: _Calls
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One slice: ``x_z (B, C, X, Y)``, ``h, c (B, hidden, X, Y)`` -> ``(logits, h_z, c_z)``."""
        calls.count += 1
        # The checkpoint re-runs this step in the backward pass; batch norm must not count the
        # same slice twice in its running statistics, so the second run leaves them untouched.
        guard = _frozen_norm_stats(self.unet) if calls.count > 1 else _no_guard()
        with guard:
            gates = self.unet(xz.contiguous()) + self.hidden_conv(h)
        i, f, o, g = torch.chunk(gates, 4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h), h, c

    def reset_forget_bias(self, value: float = 1.0) -> None:
        """Start with the forget gate open (Jozefowicz et al., 2015) so early slices carry over."""
        n = self.hidden_channels
        with torch.no_grad():
            self.hidden_conv.bias[n : 2 * n].fill_(value)

    def load_pretrained_unet(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Initialise ``self.unet`` from a 2-D slice U-Net's ``state_dict`` (two-stage training).

        Every tensor must match except the output heads, whose class count differs from the
        LSTM's ``4 * hidden`` gate channels; those keep their initialisation. Returns the skipped
        keys. Raises :class:`InputError` naming the first mismatching key otherwise (for
        example a checkpoint trained with different filters).
        """
        own = self.unet.state_dict()
        skipped = [
            k for k in own if k.startswith("heads.") and own[k].shape != _shape(state_dict, k)
        ]
        for key, tensor in own.items():
            if key in skipped:
                continue
            if key not in state_dict or state_dict[key].shape != tensor.shape:
                got = "missing" if key not in state_dict else tuple(state_dict[key].shape)
                raise InputError(
                    f"pretrained U-Net does not fit the C-LSTM's inner U-Net: {key} expects "
                    f"shape {tuple(tensor.shape)}, got {got} (same unet filters and norm?)",
                    where="model.unet",
                )
        kept = {k: v for k, v in state_dict.items() if k in own and k not in skipped}
        self.unet.load_state_dict(kept, strict=False)
        return skipped


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> tuple[int, ...] | None:
    return tuple(state_dict[key].shape) if key in state_dict else None


class _Calls:
    """How often one slice step ran: the second run is the checkpoint's recomputation."""

    def __init__(self) -> None:
        self.count = 0


@contextmanager
def _no_guard() -> Iterator[None]:
    yield


@contextmanager
def _frozen_norm_stats(module: nn.Module) -> Iterator[None]:
    """Restore every batch-norm running statistic of ``module`` on exit (even on early stop)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(norm, name).copy_(value)
