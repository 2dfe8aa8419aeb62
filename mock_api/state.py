"""The run directory: where the webhook secret, certificates, recordings and reports live.

Nothing is written inside the package. Default: ``$RTSIP_STATE_DIR``, else
``$XDG_STATE_HOME/rtsip``, else ``~/.local/state/rtsip``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .webhooks import new_secret

SECRET_FILE = "webhook_secret"


def state_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Where the state directory is, without creating it (readers such as ``rtsip trigger`` must not)."""
    if path is None:
        path = os.environ.get("RTSIP_STATE_DIR") or Path(
            os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        ) / "rtsip"
    return Path(path)


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The state directory, created if missing (OSError when it cannot be)."""
    d = state_path(path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def read_webhook_secret(directory: Path) -> str | None:
    """The secret the mock keeps in ``directory``, or None when it has none yet."""
    try:
        value = (directory / SECRET_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return value or None


def webhook_secret(directory: Path) -> str:
    """A ``whsec_`` secret that stays the same across restarts of the mock (made on first use)."""
    value = read_webhook_secret(directory)
    if value:
        return value
    value = new_secret()
    f = directory / SECRET_FILE
    f.write_text(value + "\n")
    f.chmod(0o600)
    return value


RUNNING_FILE = "running.json"


def write_running(directory: Path, info: dict[str, Any]) -> Path:
    """Say where the mock that uses ``directory`` listens and what an app needs (``rtsip env`` reads it)."""
    f = directory / RUNNING_FILE
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({**info, "pid": os.getpid()}, indent=2) + "\n")
    tmp.chmod(0o600)  # it holds the webhook secret
    tmp.replace(f)
    return f


def read_running(directory: Path) -> dict[str, Any] | None:
    """What a live mock wrote with :func:`write_running`; None when none is running (a stale file of a
    process that is gone counts as none)."""
    try:
        info: dict[str, Any] = json.loads((directory / RUNNING_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    try:
        os.kill(int(info.get("pid", 0)), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return None
    except PermissionError:
        pass  # alive, another user's
    return info


def clear_running(directory: Path) -> None:
    """Remove this process's running file (a newer mock's file stays)."""
    f = directory / RUNNING_FILE
    info = read_running(directory)
    if info is not None and info.get("pid") == os.getpid():
        f.unlink(missing_ok=True)
