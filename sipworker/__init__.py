"""SIP worker package: the only code in rtsip that imports ``pjsua2``.

The ``pjsua2-python`` wheel allows one endpoint and at most 4 calls per process and aborts the
process on many errors, so every pjsua2 endpoint lives in its own worker *process*
(``python -m sipworker.worker``).  Parents (the mock's SIP ingress, the softphone) talk to workers
only through the JSON-lines protocol in :mod:`sipworker.ipc`, usually via the asyncio
:class:`sipworker.supervisor.WorkerPool`.  Importing this package never imports pjsua2.

pjsua2 comes with the ``sip`` extra (``pip install 'rtsip[sip]'``), whose wheel exists for CPython
3.11 and 3.12 on Linux x86_64 only.  Without it a worker would die at start with an ImportError
deep in a pipe, so every front end asks :func:`sip_available` first and says :func:`sip_missing`.
"""

from __future__ import annotations

import importlib.util

from .ipc import PROTOCOL_VERSION, Command, Event, WorkerConfig

__all__ = ["PROTOCOL_VERSION", "Command", "Event", "SipUnavailable", "WorkerConfig", "require_sip",
           "sip_available", "sip_missing"]

INSTALL_HINT = "pip install 'rtsip[sip]' (CPython 3.11/3.12 on Linux x86_64)"


class SipUnavailable(RuntimeError):
    """pjsua2 is not installed, so no SIP worker can start; the message is the one line to show."""


def sip_available() -> bool:
    """True when pjsua2 can be imported, found without importing it (the parent never loads it)."""
    try:
        return importlib.util.find_spec("pjsua2") is not None
    except (ImportError, ValueError):  # a broken or half-removed install counts as missing
        return False


def sip_missing(alternative: str | None = None) -> str:
    """The one line that says what to install, and optionally what works without it.

    ``alternative``: e.g. "or run with --no-sip" for ``rtsip mock``, "or use virtual calls" for the runner.
    """
    line = f"SIP needs pjsua2: {INSTALL_HINT}"
    return f"{line}; {alternative}" if alternative else line


def require_sip(alternative: str | None = None) -> None:
    """Raise :class:`SipUnavailable` with :func:`sip_missing`'s line unless pjsua2 is installed."""
    if not sip_available():
        raise SipUnavailable(sip_missing(alternative))
