"""Library-backed subcommands of the CLI (zoo, data, training, pruning, demo)."""

from __future__ import annotations

import argparse
from typing import Any


def add_subcommands(sub: Any, fmt: type[argparse.HelpFormatter]) -> None:
    """Register the library subcommands on the CLI's subparsers."""
