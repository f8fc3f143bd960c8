"""Int8-vs-float fidelity on the part of the output that depends on the input.

An untrained or saturated net gives nearly the same output for every input. Its plain cosine
similarity stays near 1 even when the int8 model ignores its input altogether, because the
common part (the mean output over the verification samples) dominates both vectors. So every
int8-vs-float comparison also reports figures on the *centred* outputs, each output minus its
own mean over the verification samples (axis 0):

- ``centred_cos``: cosine of the centred float and centred int8 outputs,
- ``sqnr_db`` / ``centred_sqnr_db``: ``10 log10(||ref||^2 / ||ref - cand||^2)`` on the raw and
  on the centred outputs,
- ``variation_lsb``: the float output's across-sample RMS variation in steps of the int8
  output's quantization scale.

The rule (``centred_gated``): the centred cosine is gated (must reach ``centred_cos_min``)
when at least two samples were compared and the float output varies across them by at least
:data:`VARIATION_MIN_LSB` (6) quantization steps of the int8 output, RMS over samples and
elements (without a scale: when the varying part holds at least :data:`VARIATION_MIN_SHARE` of
the output's energy). Below that, the input-dependent part is comparable to the int8 model's
own accumulated rounding error (~1-2 LSB), the centred figures mostly measure that noise, and
they are reported but not gated (``centred_gated: false``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_export.outputs import output_label

if TYPE_CHECKING:
    from firmware_export.verify import Comparison

#: Across-sample RMS of the float output, in int8 output steps, from which the centred
#: cosine is gated. A few-layer int8 net's accumulated error at the output is ~1-2 LSB RMS
#: (an untrained tiny EfficientPhys: 1.5 LSB); at 3x that, a faithful model's centred cosine
#: is >= 0.95, so the default floor of 0.90 flags only a model that does not follow its input.
VARIATION_MIN_LSB = 6.0

#: Without an output scale: least share of the output's energy that must vary across samples.
VARIATION_MIN_SHARE = 1e-4


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb, nd = np.linalg.norm(a), np.linalg.norm(b), np.linalg.norm(a - b)
    if nd == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def _sqnr_db(ref: np.ndarray, cand: np.ndarray) -> float:
    signal, noise = float(np.sum(ref**2)), float(np.sum((ref - cand) ** 2))
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def centred_figures(
    reference: np.ndarray, candidate: np.ndarray, scale: float | None = None
) -> dict[str, Any]:
    """Centred cosine, SQNR (raw and centred), variation and whether the centred gate applies.

    Args:
        reference: Float outputs, samples on axis 0.
        candidate: Dequantized int8 outputs of the same shape.
        scale: Quantization scale of the int8 output (None when unknown).
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    ref_c, cand_c = ref - ref.mean(axis=0), cand - cand.mean(axis=0)
    variation = float(np.sqrt(np.mean(ref_c**2)))
    energy = float(np.mean(ref**2))
    variation_lsb = variation / scale if scale else None
    if len(ref) < 2:
        gated = False
    elif variation_lsb is not None:
        gated = variation_lsb >= VARIATION_MIN_LSB
    else:
        gated = energy > 0 and variation**2 >= VARIATION_MIN_SHARE * energy
    return {
        "centred_cos": _cos(ref_c.ravel(), cand_c.ravel()),
        "sqnr_db": _sqnr_db(ref, cand),
        "centred_sqnr_db": _sqnr_db(ref_c, cand_c),
        "variation_lsb": variation_lsb,
        "centred_gated": bool(gated),
    }


def merge_outputs(name: str, per_output: Sequence[Comparison]) -> Comparison:
    """One comparison over all outputs: the worst figure of each kind, passed if all passed,
    and ``outputs`` holding every output's own figures (``index``, ``label``).
    """
    if not per_output:
        msg = f"{name}: no outputs to merge"
        raise ValueError(msg)
    rows = []
    for i, c in enumerate(per_output):
        row = {k: v for k, v in c.to_dict().items() if k not in ("name", "outputs")}
        rows.append({"index": i, "label": output_label(i), **row})
    first = per_output[0]

    def worst(key: str, pick: Any) -> Any:
        values = [getattr(c, key) for c in per_output if getattr(c, key) is not None]
        return pick(values) if values else None

    return replace(
        first,
        name=name,
        max_abs=worst("max_abs", max),
        mae=worst("mae", max),
        rmse=worst("rmse", max),
        l2r=worst("l2r", max),
        cos=worst("cos", min),
        centred_cos=worst("centred_cos", min),
        sqnr_db=worst("sqnr_db", min),
        centred_sqnr_db=worst("centred_sqnr_db", min),
        variation_lsb=worst("variation_lsb", min),
        centred_gated=any(bool(c.centred_gated) for c in per_output),
        top1_agreement=worst("top1_agreement", min),
        accuracy_reference=first.accuracy_reference if len(per_output) == 1 else None,
        accuracy_candidate=first.accuracy_candidate if len(per_output) == 1 else None,
        passed=all(c.passed for c in per_output),
        first_divergent_op=next(
            (c.first_divergent_op for c in per_output if c.first_divergent_op), None
        ),
        known_difference=next((c.known_difference for c in per_output if c.known_difference), None),
        outputs=tuple(rows),
    )
