"""Additive attention gate on a U-Net skip connection (Oktay et al., 2018, "Attention U-Net").

The gating signal comes from the coarser level (the decoder features about to be up-sampled), so
the gate can use context the skip at the finer level does not have. Following the paper, the skip
is brought to the gating grid with a strided 2x2(x2) convolution, the attention coefficients are
computed there and up-sampled (linearly) back to the skip's grid, and the gated skip goes through
a 1x1 convolution + norm (the paper's ``W``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.blocks import ConvOps, conv_nd

_LINEAR_MODE = {2: "bilinear", 3: "trilinear"}


class AttentionGate(nn.Module):
    """Gate a skip ``x`` ``(B, skip_channels, *S)`` with ``g`` ``(B, gate_channels, *S/2)``.

    Returns the gated skip, ``(B, skip_channels, *S)``; :meth:`coefficients` gives the
    attention map ``(B, 1, *S)`` in [0, 1] alone (for visualisation).
    """

    def __init__(self, ops: ConvOps, skip_channels: int, gate_channels: int) -> None:
        super().__init__()
        dims = ops.spatial_dims
        inter = max(1, skip_channels // 2)
        self.theta_x = conv_nd(dims, skip_channels, inter, kernel_size=2, stride=2, bias=False)
        self.phi_g = conv_nd(dims, gate_channels, inter, kernel_size=1, bias=True)
        self.psi = conv_nd(dims, inter, 1, kernel_size=1, bias=True)
        self.out = nn.Sequential(
            conv_nd(dims, skip_channels, skip_channels, kernel_size=1, bias=False),
            ops.norm_layer(skip_channels),
        )
        self.mode = _LINEAR_MODE[dims]

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self.coefficients(x, g))

    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Attention coefficients ``(B, 1, *S)`` in [0, 1] on the skip's grid."""
        theta = self.theta_x(x)
        phi = self.phi_g(g)
        if phi.shape[2:] != theta.shape[2:]:  # odd skip sizes: align the gate to the skip grid
            phi = F.interpolate(phi, size=theta.shape[2:], mode=self.mode, align_corners=False)
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        return F.interpolate(alpha, size=x.shape[2:], mode=self.mode, align_corners=False)
