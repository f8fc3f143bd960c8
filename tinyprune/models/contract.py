"""The input contract each zoo rPPG net declares (frames, face size, data types, layout, labels).

Why: a net is only right on the input it was designed for (DeepPhys/TS-CAN take
``[DiffNormalized, Standardized]`` frames and predict the pulse's first difference, PhysNet takes
``DiffNormalized`` clips, EfficientPhys standardised frames ...). The factory stamps that as a
:class:`~tinyprune.runtime.contract.PreprocessingContract` on the module (``model.preprocessing``),
the one torch-free type the runtime reads too; ``train`` / ``prune`` build their data from it
(``tinyprune.app.contract``), and the run and the export record it.
"""

from __future__ import annotations

from torch import nn

from tinyprune.runtime.contract import PreprocessingContract

TRAIN_FS = 30.0  # PURE / UBFC-rPPG / the synthetic generator's frame rate
LABEL_TYPE = "DiffNormalized"  # rPPG-Toolbox's label type for every net in this zoo


def stamp_rppg_contract(
    model: nn.Module, frames: int, img_size: int, data_types: tuple[str, ...], layout: str
) -> nn.Module:
    """Set ``model.preprocessing`` for a face clip of ``frames`` x ``img_size``^2 and return it.

    Args:
        model: The freshly built net.
        frames: Frames per window.
        img_size: Face crop side in pixels.
        data_types: Input normalisations, channels concatenated in this order.
        layout: ``stacked`` (``(C, T*H, W)``, the TFLM-native nets) or ``clip``
            (``(C, T, H, W)``, the 3-D nets).
    """
    model.preprocessing = PreprocessingContract(
        task="rppg",
        frames=frames,
        height=img_size,
        width=img_size,
        channels=3 * len(data_types),
        data_types=tuple(data_types),
        layout=layout,
        fs=TRAIN_FS,
        label_type=LABEL_TYPE,
    )
    return model
