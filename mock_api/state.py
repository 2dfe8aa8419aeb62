"""The run directory: where the webhook secret, certificates, recordings and reports live.

Nothing is written inside the package. Default: ``$RTSIP_STATE_DIR``, else
``$XDG_STATE_HOME/rtsip``, else ``~/.local/state/rtsip``.
"""

from __future__ import annotations

import os
from pathlib import Path

from .webhooks import new_secret


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    if path is None:
        path = os.environ.get("RTSIP_STATE_DIR") or Path(
            os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
        ) / "rtsip"
    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def webhook_secret(directory: Path) -> str:
    """A ``whsec_`` secret that stays the same across restarts of the mock."""
    f = directory / "webhook_secret"
    if f.exists():
        value = f.read_text().strip()
        if value:
            return value
    value = new_secret()
    f.write_text(value + "\n")
    f.chmod(0o600)
    return value
