"""tinyprune: prune PyTorch networks and ship them to microcontrollers.

The package never imports TensorFlow or ONNX; conversion lives in ``firmware_export``.
"""

from tinyprune.errors import (
    BudgetExceededError,
    ConfigError,
    ExportError,
    PruningError,
    TinypruneError,
    UnknownNameError,
    UnsupportedOpError,
    VerificationError,
)

__version__ = "0.1.0"

__all__ = [
    "BudgetExceededError",
    "ConfigError",
    "ExportError",
    "PruningError",
    "TinypruneError",
    "UnknownNameError",
    "UnsupportedOpError",
    "VerificationError",
    "__version__",
]
