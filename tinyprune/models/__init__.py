"""The model zoo: ``create_model("physnet")``, ``list_models("test_*")``, ``get_model_spec``.

Importing this package registers every built-in model (rPPG nets in :mod:`.rppg` and
:mod:`.rppg_2d`, classifiers in :mod:`.vision` and :mod:`.resnet`). Every created model
carries ``input_shape`` (per-sample PyTorch layout) and ``task``.
"""

from tinyprune.counting import Complexity, count_macs_params, count_params
from tinyprune.models import resnet, rppg, rppg_2d, vision  # noqa: F401  (registers models)
from tinyprune.models.registry import (
    MODELS,
    ModelSpec,
    create_model,
    get_model_spec,
    list_models,
    register_model,
)
from tinyprune.models.rppg_2d import stack_frames, stacked_to_frames

__all__ = [
    "MODELS",
    "Complexity",
    "ModelSpec",
    "count_macs_params",
    "count_params",
    "create_model",
    "get_model_spec",
    "list_models",
    "register_model",
    "stack_frames",
    "stacked_to_frames",
]
