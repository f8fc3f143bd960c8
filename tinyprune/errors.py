"""One exception hierarchy for tinyprune and firmware_export.

Every error carries the process exit code the CLI maps it to, so that build scripts can
tell a bad input (2) from an over-budget model (3), an op the target lacks (4) and a
verification failure (5). Messages say what was wrong, what was expected and the way out.
"""

from __future__ import annotations

import difflib
from typing import Any


class TinypruneError(Exception):
    """Base class of every error tinyprune raises on purpose (exit code 1)."""

    exit_code: int = 1


class ConfigError(TinypruneError, ValueError):
    """Bad option, incompatible options or an unreadable / malformed input file (exit 2)."""

    exit_code = 2


class UnknownNameError(ConfigError):
    """A name not found in a registry; the message lists valid names and close matches."""


class PruningError(TinypruneError):
    """A pruning step cannot be carried out (wrong score shape, a layer would be emptied)."""


class UnreachableBudgetError(ConfigError, PruningError):
    """A MACs/params budget below the smallest network the pruning can reach (exit 2).

    The message names the smallest reachable budget; a bad input, not a failed prune.
    """


class ExportError(TinypruneError):
    """A conversion stage failed; ``stage`` names it (onnx, convert, quantize, tflm, ...)."""

    def __init__(self, message: str, *, stage: str = "export") -> None:
        super().__init__(message)
        self.stage = stage


class UnsupportedOpError(ExportError):
    """The model needs an op the target runtime lacks (exit 4); nothing is emitted."""

    exit_code = 4

    def __init__(
        self, message: str, *, ops: tuple[str, ...] = (), target: str = "", stage: str = "op-check"
    ) -> None:
        super().__init__(message, stage=stage)
        self.ops = ops
        self.target = target


class MissingKernelError(ExportError):
    """A LiteRT op resolver has no kernel for ops of the model (e.g. ELU in the reference one).

    Raised where LiteRT builds its interpreter, so callers branch on this class and read
    ``ops`` instead of matching LiteRT's message text. Its exit code is ExportError's.

    Attributes:
        ops: The op names LiteRT named, e.g. ``("ELU",)``.
        resolver: The resolver that lacks them (``"ref"``, ``"builtin"``, ``"xnnpack"``).
    """

    def __init__(
        self, message: str, *, ops: tuple[str, ...] = (), resolver: str = "", stage: str = "litert"
    ) -> None:
        super().__init__(message, stage=stage)
        self.ops = ops
        self.resolver = resolver


class VerificationError(ExportError):
    """Two runtimes disagree beyond the tolerance (exit 5)."""

    exit_code = 5

    def __init__(self, message: str, *, stage: str = "verify") -> None:
        super().__init__(message, stage=stage)


class BudgetExceededError(TinypruneError):
    """The model does not fit the target (exit 3); artifacts and report are still written."""

    exit_code = 3

    def __init__(self, message: str, *, result: Any = None) -> None:
        super().__init__(message)
        self.result = result  # the ExportResult whose budget rows failed (files written)

    @property
    def report(self) -> Any:
        """Deprecated alias of :attr:`result` (it always held the ExportResult)."""
        import warnings

        msg = "BudgetExceededError.report is renamed .result (an ExportResult)"
        warnings.warn(msg, DeprecationWarning, stacklevel=2)
        return self.result


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """Build the one-line error for an unknown name: what is known and the closest match."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(known))}{hint}"
