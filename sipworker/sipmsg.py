"""Parse the header block of a raw SIP message (``SipRxData.wholeMsg``).

pjsua2 exposes received messages only as text, so custom ``X-`` headers of an INVITE are read
from it here.  Pure Python, no pjsua2: unit-testable and shared by both roles.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# RFC 3261 §7.3.3 compact forms, expanded so parents see one spelling.
COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "b": "Referred-By",
    "o": "Event",
    "u": "Allow-Events",
}

_URI_IN_ADDR = re.compile(r"<([^>]*)>")
_CONTACT_PARAMS = re.compile(r"(;[A-Za-z0-9._~!*+-]+(=[A-Za-z0-9._~!*+:-]+)?)+")  # nothing that ends the URI


@dataclass
class SipMessage:
    start_line: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.start_line.startswith("SIP/")

    @property
    def method(self) -> str:
        return self.start_line.split(" ", 1)[0] if self.is_request else ""

    @property
    def request_uri(self) -> str:
        parts = self.start_line.split(" ")
        return parts[1] if self.is_request and len(parts) >= 2 else ""

    @property
    def status_code(self) -> int:
        parts = self.start_line.split(" ")
        if not self.is_request and len(parts) >= 2 and parts[1].isdigit():
            return int(parts[1])
        return 0

    def get(self, name: str, default: str | None = None) -> str | None:
        """First value of a header (case-insensitive)."""
        low = name.lower()
        for k, v in self.headers:
            if k.lower() == low:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        low = name.lower()
        return [v for k, v in self.headers if k.lower() == low]


def parse(raw: str) -> SipMessage:
    """Split a SIP message into start line, ordered (name, value) headers and body.

    Header continuation lines (leading whitespace) are folded into the previous header; compact
    header names are expanded.  Malformed header lines (no colon) are skipped rather than raised:
    the message already passed pjsip's own parser.
    """
    text = raw.replace("\r\n", "\n")
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    msg = SipMessage(start_line=lines[0].strip() if lines else "", body=body)
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and msg.headers:
            name, value = msg.headers[-1]
            msg.headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip()
        msg.headers.append((COMPACT.get(name.lower(), name) if len(name) == 1 else name, value.strip()))
    return msg


def uri_of(name_addr: str) -> str:
    """``"Bob" <sip:bob@x>;tag=1`` → ``sip:bob@x``; a bare URI is returned without parameters."""
    m = _URI_IN_ADDR.search(name_addr)
    if m:
        return m.group(1)
    return name_addr.split(";", 1)[0].strip()


def user_of(uri: str) -> str:
    """User part of a SIP URI (``sip:proj_x@host;transport=tls`` → ``proj_x``); '' if none."""
    rest = uri_of(uri)
    for scheme in ("sips:", "sip:", "tel:"):
        if rest.lower().startswith(scheme):
            rest = rest[len(scheme) :]
            break
    if "@" not in rest:
        return ""
    return rest.split("@", 1)[0].split(";", 1)[0]


def check_contact_params(params: str) -> str:
    """``params`` if they are URI parameters a call may add to its Contact (``Softphone.call``'s
    ``contact_params``), else ValueError."""
    if not _CONTACT_PARAMS.fullmatch(params):
        raise ValueError(f"contact_params {params!r}: give URI parameters, each ';name' or ';name=value'")
    return params


def uri_param_names(name_addr: str) -> list[str]:
    """The names of a name-addr's URI parameters, in order, lower-cased (``<sip:a@h;transport=tls;ob>`` →
    ``["transport", "ob"]``). Only a URI in angle brackets has any: without them, RFC 3261 reads the
    ``;params`` as the header's own."""
    m = _URI_IN_ADDR.search(name_addr)
    if not m:
        return []
    host_and_params = m.group(1).split("?", 1)[0].rsplit("@", 1)[-1]  # a user part may carry ";" of its own
    return [part.split("=", 1)[0].strip().lower() for part in host_and_params.split(";")[1:] if part.strip()]


def repeated_uri_params(name_addr: str) -> list[str]:
    """The URI parameters a name-addr gives more than once (``;transport=tls;transport=tls`` → ``["transport"]``)."""
    names = uri_param_names(name_addr)
    return sorted({n for n in names if names.count(n) > 1})
