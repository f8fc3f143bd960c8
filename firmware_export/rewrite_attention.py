"""``nn.MultiheadAttention`` written out with explicit heads, for converters and TFLM.

torch.onnx exports ``nn.MultiheadAttention`` with the heads folded into the batch axis
(``(L, B*h, d)`` after 3-D reshapes and transposes); onnx2tf 1.28 converts that layout wrongly
(the float TFLite model disagrees with ONNX Runtime: cosine 0.96 on a 4-head block). The same
computation written as transformer rPPG nets write it themselves (PhysFormer's
``split_last(..).transpose(1, 2)``): Linear projections, ``(B, L, h, d) -> (B, h, L, d)``,
a 4-D batched matmul, softmax over the keys, the transposed merge and the output Linear,
converts correctly and runs on TFLM in int8 (BATCH_MATMUL, SOFTMAX, TRANSPOSE, RESHAPE,
FULLY_CONNECTED). The rewrite is exact up to float rounding (tests compare the two on random
inputs, masks and both layouts).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

log = logging.getLogger(__name__)


class ExplicitHeadsAttention(nn.Module):
    """The forward of an ``nn.MultiheadAttention`` (eval mode) with explicit 4-D heads."""

    def __init__(self, m: nn.MultiheadAttention) -> None:
        super().__init__()
        e, h = m.embed_dim, m.num_heads
        self.heads, self.head_dim, self.batch_first = h, e // h, m.batch_first
        if m._qkv_same_embed_dim:
            wq, wk, wv = m.in_proj_weight.detach().chunk(3)
        else:
            wq, wk, wv = (w.detach() for w in (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight))
        bias = m.in_proj_bias.detach().chunk(3) if m.in_proj_bias is not None else (None,) * 3
        self.q, self.k, self.v = (_linear(w, b) for w, b in zip((wq, wk, wv), bias, strict=True))
        self.out_proj = _linear(m.out_proj.weight.detach(), m.out_proj.bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(  # noqa: PLR0913 - nn.MultiheadAttention's signature
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Same arguments and results as ``nn.MultiheadAttention.forward`` in eval mode."""
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q = self._split(self.q(query))
        k, v = self._split(self.k(key)), self._split(self.v(value))
        scores = q @ k.transpose(-2, -1) * (1.0 / math.sqrt(self.head_dim))
        scores = _masked(scores, key_padding_mask, attn_mask, is_causal)
        attn = torch.softmax(scores, dim=-1)
        b, _, n, _ = q.shape
        out = self.out_proj((attn @ v).permute(0, 2, 1, 3).reshape(b, n, -1))
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, attn.mean(dim=1) if average_attn_weights else attn


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.detach())
    return layer


def _masked(
    scores: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    is_causal: bool,
) -> torch.Tensor:
    """Apply masks as ``F.multi_head_attention_forward`` does (bool: True = masked out)."""
    if attn_mask is None and is_causal:
        n, s = scores.shape[-2:]
        attn_mask = torch.ones(n, s, dtype=torch.bool).triu(1)
    if attn_mask is not None:
        scores = _apply(
            scores, attn_mask if attn_mask.dim() == 2 else attn_mask.reshape(scores.shape)
        )
    if key_padding_mask is not None:
        scores = _apply(scores, key_padding_mask[:, None, None, :])
    return scores


def _apply(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def _replaceable(m: nn.Module) -> bool:
    return (
        isinstance(m, nn.MultiheadAttention)
        and m.bias_k is None
        and m.bias_v is None
        and not m.add_zero_attn
        and m.embed_dim % m.num_heads == 0
    )


def rewrite_attention_(model: nn.Module) -> list[str]:
    """Replace ``nn.MultiheadAttention`` modules in place; return ``mha-explicit-heads:<path>``.

    Left alone (and converted as torch.onnx exports them): modules with ``bias_k``/``bias_v``
    or ``add_zero_attn``, and the attention inside ``nn.TransformerEncoderLayer`` /
    ``nn.TransformerDecoderLayer`` (their forward reads the module's packed weights; they
    export in a form onnx2tf converts correctly).
    """
    done = []
    keep = (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
    for name, parent in list(model.named_modules()):
        if isinstance(parent, keep):
            continue
        for child_name, child in list(parent.named_children()):
            if _replaceable(child):
                setattr(parent, child_name, ExplicitHeadsAttention(child))
                done.append(f"mha-explicit-heads:{f'{name}.' if name else ''}{child_name}")
    if done:
        log.info("rewrote multi-head attention with explicit heads: %s", ", ".join(done))
    return done


__all__ = ["ExplicitHeadsAttention", "rewrite_attention_"]
