"""The model zoo's registry: named factories with the facts export and budgets need.

Modelled on timm's ``register_model`` / ``create_model``: a factory is a plain function that
builds an ``nn.Module``; the decorator records its task, its per-sample input shape at the
default size, whether it runs on TensorFlow Lite Micro as is, and its default keyword
arguments. ``create_model`` drops ``None`` keyword arguments (so a CLI can pass unset options
through), checks the rest against the factory's signature, and stamps ``input_shape`` and
``task`` on the module so that export can build calibration data for it.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from tinyprune.errors import ConfigError
from tinyprune.registry import Registry

Task = Literal["classification", "rppg"]
_TASKS = ("classification", "rppg")

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What the zoo knows about a registered model, without building it.

    Attributes:
        name: Registry name, e.g. ``"physnet"``.
        task: ``"classification"`` (logits ``(B, num_classes)``) or ``"rppg"`` (BVP ``(B, T)``).
        input_shape: Per-sample PyTorch input layout at the default size: ``(C, H, W)`` for
            images and frame-stacked clips, ``(C, T, H, W)`` for 3-D rPPG clips.
        tflm_native: True when every op maps to a TFLite Micro builtin and every tensor has
            rank <= 4, so the model exports to Cortex-M without a rewrite.
        description: One line for ``tinyprune models``.
        default_kwargs: The factory's keyword arguments and their defaults.
        factory: The callable that builds the model.
    """

    name: str
    task: Task
    input_shape: tuple[int, ...]
    tflm_native: bool
    description: str
    default_kwargs: dict[str, Any] = field(default_factory=dict)
    factory: ModelFactory | None = field(default=None, repr=False, compare=False)


MODELS: Registry[ModelSpec] = Registry("model")


def register_model(
    name: str,
    *,
    task: Task,
    input_shape: tuple[int, ...],
    tflm_native: bool,
    description: str = "",
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator that registers a model factory under ``name``.

    Args:
        name: Lower_snake registry name; ``test_*`` is reserved for tiny test variants.
        task: ``"classification"`` or ``"rppg"``.
        input_shape: Per-sample input shape the factory's defaults produce.
        tflm_native: Whether the model runs on TFLM without a rewrite.
        description: One-line description (defaults to the docstring's first line).

    Returns:
        The decorator; it returns the factory unchanged.

    Raises:
        ConfigError: If ``task`` is not one of the known tasks.
    """
    if task not in _TASKS:
        msg = f"model {name!r}: task {task!r} is not one of {', '.join(_TASKS)}"
        raise ConfigError(msg)

    def deco(factory: ModelFactory) -> ModelFactory:
        doc = (factory.__doc__ or "").strip().splitlines()
        spec = ModelSpec(
            name=name,
            task=task,
            input_shape=tuple(int(d) for d in input_shape),
            tflm_native=tflm_native,
            description=description or (doc[0] if doc else ""),
            default_kwargs=_defaults_of(factory),
            factory=factory,
        )
        MODELS.register(name, help=spec.description)(spec)
        return factory

    return deco


def _defaults_of(factory: ModelFactory) -> dict[str, Any]:
    sig = inspect.signature(factory)
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.default is not inspect.Parameter.empty
    }


def get_model_spec(name: str) -> ModelSpec:
    """Return the :class:`ModelSpec` of ``name``.

    Raises:
        UnknownNameError: If no model has that name (the message suggests a close match).
    """
    return MODELS.get(name)


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by an fnmatch ``pattern``."""
    names = MODELS.names()
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name``.

    Keyword arguments whose value is ``None`` are dropped, so the factory's defaults apply.
    The returned module carries ``input_shape`` (per-sample PyTorch layout for the options
    used) and ``task``.

    Args:
        name: Registry name (see :func:`list_models`).
        **kwargs: Factory options, e.g. ``num_classes=10`` or ``frames=64``.

    Returns:
        The model, in training mode, with freshly initialised weights.

    Raises:
        UnknownNameError: If ``name`` is not registered.
        ConfigError: If an option is unknown to the factory or has a bad value.
    """
    spec = MODELS.get(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if spec.factory is None:  # a spec built by hand, not by the decorator
        msg = f"model {name!r} has no factory; register it with @register_model"
        raise ConfigError(msg)
    sig = inspect.signature(spec.factory)
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        accepted = ", ".join(spec.default_kwargs) or "none"
        msg = (
            f"bad options for model {name!r}: {e}; got {sorted(kwargs)}, "
            f"accepted options: {accepted}"
        )
        raise ConfigError(msg) from e
    model = spec.factory(**kwargs)
    if not hasattr(model, "input_shape"):
        model.input_shape = spec.input_shape
    model.input_shape = tuple(int(d) for d in model.input_shape)
    model.task = spec.task
    return model
