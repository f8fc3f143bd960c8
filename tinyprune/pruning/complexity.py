"""Per-layer cost of a network: MACs, parameters and activation bytes, dense and non-zero.

Pruning is judged by what it saves, so the numbers must be counted one way everywhere
(docs/methods.md §0 and §1.3): ``MACs`` are multiply-accumulates of conv / conv-transpose /
linear layers (``FLOPs = 2 x MACs``), parameters are weights + biases (+ BN affine when
``count_bn``), all per sample. The counts come from one forward pass with hooks, so they
see the real output sizes; :func:`flop_counter_macs` cross-checks them with
``torch.utils.flop_counter``. Non-zero figures count ``nnz(W) x positions`` for the MACs of
unstructured-sparse layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from tinyprune.errors import ConfigError
from tinyprune.pruning.tensors import optional_tensor_attr, tensor_attr, weight_of

CONV_TYPES: tuple[type[_ConvNd], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONVT_TYPES: tuple[type[_ConvTransposeNd], ...] = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
BN_TYPES: tuple[type[_BatchNorm], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
COUNTED_TYPES = CONV_TYPES + CONVT_TYPES + (nn.Linear,) + BN_TYPES


@dataclass(frozen=True)
class LayerComplexity:
    """Cost of one conv / conv-transpose / linear / batch-norm layer, per sample.

    ``positions`` is the number of times each weight is used per sample: output positions for
    a conv, input positions for a conv-transpose, leading positions for a linear layer.
    """

    name: str
    kind: str
    macs: int
    params: int
    nnz_macs: int
    nnz_params: int
    activation_bytes: int
    positions: int
    calls: int


@dataclass(frozen=True)
class ModelComplexity:
    """Totals and the per-layer table of :func:`measure_complexity`."""

    layers: tuple[LayerComplexity, ...]
    total_params: int  # every parameter of the model, counted or not

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates per sample."""
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        """``2 x macs`` (the convention of docs/methods.md §0)."""
        return 2 * self.macs

    @property
    def params(self) -> int:
        """Dense parameters of the counted layers."""
        return sum(layer.params for layer in self.layers)

    @property
    def nnz_macs(self) -> int:
        """Multiply-accumulates with a non-zero weight."""
        return sum(layer.nnz_macs for layer in self.layers)

    @property
    def nnz_params(self) -> int:
        """Non-zero parameters of the counted layers."""
        return sum(layer.nnz_params for layer in self.layers)

    @property
    def peak_activation_bytes(self) -> int:
        """Largest single layer output (a lower bound of the inference arena)."""
        return max((layer.activation_bytes for layer in self.layers), default=0)

    def layer(self, name: str) -> LayerComplexity:
        """The entry of layer ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        msg = f"no counted layer named {name!r}; counted: {[x.name for x in self.layers]}"
        raise ConfigError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (totals plus the per-layer table)."""
        return {
            "macs": self.macs,
            "flops": self.flops,
            "params": self.params,
            "nnz_macs": self.nnz_macs,
            "nnz_params": self.nnz_params,
            "total_params": self.total_params,
            "layers": [layer.__dict__.copy() for layer in self.layers],
        }


def _positions(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """How often each weight is used per sample (see :class:`LayerComplexity`)."""
    if isinstance(module, CONV_TYPES):
        return math.prod(out.shape[2:])
    if isinstance(module, CONVT_TYPES):
        return math.prod(inp.shape[2:])
    if isinstance(module, nn.Linear):
        return math.prod(inp.shape[1:-1])
    return 0


def _param_counts(module: nn.Module, count_bn: bool) -> tuple[int, int]:
    """(dense, non-zero) parameters of one counted layer."""
    if isinstance(module, BN_TYPES):
        if not count_bn or not module.affine:
            return 0, 0
        tensors = [weight_of(module), tensor_attr(module, "bias")]
    else:
        bias = optional_tensor_attr(module, "bias")
        tensors = [weight_of(module)] + ([bias] if bias is not None else [])
    dense = sum(t.numel() for t in tensors)
    nnz = sum(int(torch.count_nonzero(t.detach())) for t in tensors)
    return dense, nnz


def _run_forward(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)


def measure_complexity(
    model: nn.Module,
    example_input: Any,
    *,
    bytes_per_element: int = 4,
    count_bn: bool = True,
) -> ModelComplexity:
    """Count MACs, parameters and output bytes of every conv/linear/BN layer in one forward.

    Args:
        model: The network (left unchanged; run under ``torch.no_grad`` in its current mode).
        example_input: A batch (tensor, tuple of positional inputs or dict of keyword inputs).
        bytes_per_element: Size of one activation element (4 for float32, 1 for int8).
        count_bn: Count BN affine parameters (docs/methods.md §0 asks for both conventions).

    Returns:
        Per-sample counts per layer, in execution order.
    """
    calls: dict[str, list[tuple[int, int]]] = {}
    modules: dict[nn.Module, str] = {
        m: n for n, m in model.named_modules() if isinstance(m, COUNTED_TYPES)
    }

    def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        inp = inputs[0]
        batch = int(inp.shape[0]) if inp.dim() > 1 else 1
        act = output.numel() // max(batch, 1) * bytes_per_element
        calls.setdefault(modules[module], []).append((_positions(module, inp, output), act))

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        with torch.no_grad():
            _run_forward(model, example_input)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for module, name in modules.items():
        if name not in calls:
            continue
        positions = sum(p for p, _ in calls[name])
        dense_p, nnz_p = _param_counts(module, count_bn)
        weight = getattr(module, "weight", None)
        is_bn = isinstance(module, BN_TYPES)
        macs = 0 if is_bn or weight is None else weight.numel() * positions
        nnz_macs = 0 if is_bn or weight is None else int(torch.count_nonzero(weight)) * positions
        layers.append(
            LayerComplexity(
                name=name,
                kind=type(module).__name__,
                macs=macs,
                params=dense_p,
                nnz_macs=nnz_macs,
                nnz_params=nnz_p,
                activation_bytes=max(a for _, a in calls[name]),
                positions=positions,
                calls=len(calls[name]),
            )
        )
    order = list(calls)
    layers.sort(key=lambda x: order.index(x.name))
    total = sum(p.numel() for p in model.parameters())
    return ModelComplexity(layers=tuple(layers), total_params=total)


def flop_counter_macs(model: nn.Module, example_input: Any) -> int:
    """MACs per sample according to ``torch.utils.flop_counter`` (cross-check only).

    :func:`tinyprune.counting.count_macs_params` (shared with the zoo) does the counting; this
    adapts an example batch (or a tuple whose first item is one) to its per-sample shape.
    """
    from tinyprune.counting import count_macs_params

    first = example_input[0] if isinstance(example_input, (tuple, list)) else example_input
    return count_macs_params(model, tuple(first.shape[1:]), device="cpu").macs
