"""CUDA-graph capture of the step's forward, loss and backward (``train.speed.cuda_graphs``).

A step of a 3-D U-Net launches hundreds of small kernels at its deep stages; replaying them as
one captured graph removes the CPU launch cost. What is captured: the forward under autocast
(its weight-cast cache off, as graphs require), the loss and the scaled backward, over static
input buffers the real batch is copied into. What stays eager, after the replay: gradient
unscaling, clipping and the optimizer step (a GradScaler's inf check reads a value back on the
host, which a graph cannot contain). The gradients live in the graph's memory pool and are
overwritten by each replay; they are re-attached to their parameters after every replay, so
a ``zero_grad(set_to_none=True)`` elsewhere (a FLOP count, a checkpoint tool) cannot detach
the parameters from the graph.

Protocol (torch.cuda.graphs' "whole network capture"): ``warmup`` eager steps on a side stream
(cuDNN autotuning, the scaler's lazily created scale tensor, optimizer state), then one capture,
then a replay per step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

ForwardBackward = Callable[[Tensor, Tensor], Tensor]
WARMUP_STEPS = 3


class CapturedStep:
    """Forward + loss + backward of one step, eager for the first ``warmup`` calls, then a
    CUDA graph over static ``(B, C, *S)`` image and ``(B, *S)`` label buffers.

    Args:
        params: the optimizer's parameters (whose ``.grad`` the graph writes).
        zero_grad: sets the gradients to None (before eager steps and before the capture).
        warmup: eager steps before the capture.
    """

    def __init__(
        self,
        params: list[Tensor],
        zero_grad: Callable[[], None],
        warmup: int = WARMUP_STEPS,
    ) -> None:
        self.params = params
        self.grads: list[Tensor | None] = []
        self.zero_grad = zero_grad
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.image: Tensor | None = None
        self.label: Tensor | None = None
        self.loss: Tensor | None = None
        self.pool_free_bytes = 0  # set after capture: see graph_pool_free_bytes

    def run(self, forward_backward: ForwardBackward, image: Tensor, label: Tensor) -> Tensor:
        """Gradients of the loss on ``(image, label)`` in ``.grad``; returns the loss (a copy)."""
        self.calls += 1
        if self.graph is None and self.calls <= self.warmup:
            return self._eager(forward_backward, image, label)
        if self.graph is None:
            self._capture(forward_backward, image, label)
        assert self.image is not None and self.label is not None and self.loss is not None
        if image.shape != self.image.shape or label.shape != self.label.shape:
            raise ValueError(
                f"a CUDA-graphed step needs static shapes: captured image "
                f"{tuple(self.image.shape)}, label {tuple(self.label.shape)}; got "
                f"{tuple(image.shape)}, {tuple(label.shape)}"
            )
        self.image.copy_(image)
        self.label.copy_(label)
        self.graph.replay()
        for param, grad in zip(self.params, self.grads, strict=True):
            param.grad = grad
        return self.loss.clone()

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _eager(self, forward_backward: ForwardBackward, image: Tensor, label: Tensor) -> Tensor:
        self.zero_grad()
        side = torch.cuda.Stream(device=image.device)
        side.wait_stream(torch.cuda.current_stream(image.device))
        with torch.cuda.stream(side):
            loss = forward_backward(image, label)
        torch.cuda.current_stream(image.device).wait_stream(side)
        return loss

    def _capture(self, forward_backward: ForwardBackward, image: Tensor, label: Tensor) -> None:
        self.image, self.label = image.clone(), label.clone()  # clone keeps the memory format
        self.zero_grad()  # the captured backward allocates .grad in the graph's pool
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread keeps calling CUDA (cudaHostAlloc,
        # event queries) while this thread captures; in the default "global" mode those calls
        # invalidate the capture or fail in that thread.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.loss = forward_backward(self.image, self.label)
        self.grads = [p.grad for p in self.params]
        self.pool_free_bytes = graph_pool_free_bytes(self.graph.pool())


def graph_pool_free_bytes(pool: tuple[int, int]) -> int:
    """Bytes a graph's private memory pool holds beyond its live tensors.

    That is where every replay's activations go: ``max_memory_allocated`` counted them while
    the capture allocated them, but once it ends they are free blocks of the pool, which no
    other allocation can use and no later peak counts. A peak-memory figure for a graphed step
    adds them. Segments are matched to the pool as torch's own CUDA-graph trees do
    (``torch._inductor.cudagraph_trees.get_cudagraph_segments``).
    """
    segments = [s for s in torch.cuda.memory_snapshot() if s["segment_pool_id"] == pool]
    return sum(s["total_size"] - s["allocated_size"] for s in segments)
