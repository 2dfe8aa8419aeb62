"""CLI subcommands that live outside ``harness/cli.py``; each module exposes ``register(subparsers)``."""
