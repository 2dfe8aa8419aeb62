"""CLI subcommands that live outside ``harness/cli.py``; each module exposes ``register(subparsers)``."""

from __future__ import annotations

import argparse


def header_arg(value: str) -> tuple[str, str]:
    """``--header K:V`` as a (name, value) pair; argparse reports a malformed one."""
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected K:V, got {value!r}")
    return name.strip(), val.strip()
