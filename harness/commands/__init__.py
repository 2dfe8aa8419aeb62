"""CLI subcommands that live outside ``harness/cli.py``: ``register(subparsers)`` where a module adds
its own, and the bodies ``cli.py`` calls (``run``, ``checks``).

A user mistake (a bad URI, a missing file, a value out of range) is raised as :class:`UsageError`
before anything starts; ``harness.cli.main`` prints it as one line and exits 2. A failure that
no flag could have avoided is a :class:`CommandError`: one line too, exit 1.
"""

from __future__ import annotations

import argparse


class CommandError(Exception):
    """The command failed for a reason its message states; ``main`` prints it as one line."""

    exit_code = 1


class UsageError(CommandError):
    """The command line cannot work as given; the message says what is wrong and what is expected."""

    exit_code = 2


def header_arg(value: str) -> tuple[str, str]:
    """``--header K:V`` as a (name, value) pair; argparse reports a malformed one."""
    name, sep, val = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected K:V, got {value!r}")
    return name.strip(), val.strip()
