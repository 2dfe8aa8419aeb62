"""SIP worker package: the only code in rtsip that imports ``pjsua2``.

The ``pjsua2-python`` wheel allows one endpoint and at most 4 calls per process and aborts the
process on many errors, so every pjsua2 endpoint lives in its own worker *process*
(``python -m sipworker.worker``).  Parents (the mock's SIP ingress, the softphone) talk to workers
only through the JSON-lines protocol in :mod:`sipworker.ipc`, usually via the asyncio
:class:`sipworker.supervisor.WorkerPool`.  Importing this package never imports pjsua2.
"""

from .ipc import PROTOCOL_VERSION, Command, Event, WorkerConfig

__all__ = ["PROTOCOL_VERSION", "Command", "Event", "WorkerConfig"]
