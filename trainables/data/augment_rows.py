"""Which samples of a batch drew which transform, and running a transform on those rows only.

The decisions are host numbers (they choose which code runs); the row indices reach the device
in one small non-blocking copy, so nothing here makes the host wait for the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from trainables.data.augment_config import AugmentConfig
from trainables.data.augment_ops import upload

# Decision columns of the per-sample uniform draw; flips follow, one column per spatial axis.
TRANSFORMS = (
    "rotation",
    "scale",
    "noise",
    "blur",
    "brightness",
    "contrast",
    "lowres",
    "gamma_invert",
    "gamma",
)


@dataclass(frozen=True)
class Rows:
    """The samples (row indices into the batch) that drew each transform.

    Names: the ``TRANSFORMS``, ``flip0``.. per spatial axis, ``spatial`` (rotation or
    scale: the samples that are resampled) and ``spatial0``, ``spatial1``.. (those of each
    group of the batch, numbered within the group).

    Attributes:
        host: ``name -> sorted row indices`` on the host; they choose which code runs.
        device: ``name -> (n,) int64`` the same indices on the batch's device.
        masks: ``rotation`` and ``scale`` as ``(B,)`` bool masks on the batch's device.
    """

    host: dict[str, list[int]]
    device: dict[str, Tensor]
    masks: dict[str, Tensor]


def decide(
    cfg: AugmentConfig, decisions: Tensor, device: torch.device, group_sizes: list[int]
) -> Rows:
    """Which rows drew which transform, from ``(B, decision_columns)`` host uniforms.

    The draw is on the host because its outcome picks the code path: drawn on the GPU it would
    have to be read back, a host sync per batch. ``spatial{g}`` holds group ``g``'s rows that
    are resampled, numbered within the group.
    """
    ndim = decisions.shape[1] - len(TRANSFORMS)
    probs = [getattr(cfg, f"{name}_prob") for name in TRANSFORMS] + [cfg.flip_prob] * ndim
    hits = decisions < torch.tensor(probs, dtype=decisions.dtype)  # (B, 9 + ndim) bool
    names = [*TRANSFORMS, *(f"flip{axis}" for axis in range(ndim))]
    host = {name: hits[:, j].nonzero().flatten().tolist() for j, name in enumerate(names)}
    host["spatial"] = sorted(set(host["rotation"]) | set(host["scale"]))
    offset = 0
    for g, size in enumerate(group_sizes):
        host[f"spatial{g}"] = [r - offset for r in host["spatial"] if offset <= r < offset + size]
        offset += size
    # Every index list and both masks travel in one copy; the split views need no sync.
    mask_columns = [TRANSFORMS.index("rotation"), TRANSFORMS.index("scale")]
    parts = [torch.tensor(rows, dtype=torch.int64) for rows in host.values()]
    parts += [hits[:, j].to(torch.int64) for j in mask_columns]
    pieces = upload(torch.cat(parts), device).split([part.numel() for part in parts])
    return Rows(
        host=host,
        device=dict(zip(host, pieces[: len(host)], strict=True)),
        masks={"rotation": pieces[-2].bool(), "scale": pieces[-1].bool()},
    )


def uniform(
    low_high: tuple[float, float],
    shape: tuple[int, ...],
    generator: torch.Generator,
    like: Tensor,
) -> Tensor:
    """Uniform draws in ``[low, high]`` of ``shape``, on ``like``'s device, float32."""
    low, high = low_high
    u = torch.rand(shape, generator=generator, device=like.device)
    return low + (high - low) * u


def on_rows(x: Tensor, rows: Rows, name: str, fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Apply ``fn(x[index], index)`` to the rows that drew ``name`` only (``index`` ``(n,)``
    int64 on ``x``'s device); the other rows stay untouched."""
    count = len(rows.host[name])
    if count == 0:
        return x
    index = rows.device[name]
    if count == x.shape[0]:
        return fn(x, index)
    return x.index_copy(0, index, fn(x.index_select(0, index), index))
