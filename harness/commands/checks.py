"""Early checks of command-line values: each raises :class:`UsageError` saying what is wrong and what
is expected, so a mistake costs one line before any server, worker or call has started."""

from __future__ import annotations

import base64
import binascii
import os
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from harness.commands import UsageError
from sipworker.codecs import normalise

SIP_EXAMPLE = "sip:proj_x@127.0.0.1:5061;transport=tls"
SIP_FORM = f"expected sip:user@host[:port][;param=value...] (or sips:), e.g. {SIP_EXAMPLE}"
TEL_FORM = "expected tel:+digits[;param=value...], e.g. tel:+15555550100"
TRANSPORTS = ("udp", "tcp", "tls")
DTMF_DIGITS = re.compile(r"[0-9*#A-Da-d]+")

_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PARAM = re.compile(r"[A-Za-z0-9\-_.!~*'%]+(?:=[A-Za-z0-9\-_.!~*'%\[\]/:&+$]*)?")
_TEL = re.compile(r"\+?[0-9][0-9\-.()]*")


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of spaces folded, for a one-line error."""
    return " ".join(text.split())


def sip_uri(value: str, what: str, *, tel: bool = False, name_addr: bool = False) -> str:
    """``value`` if it is ``sip:``/``sips:user@host[:port][;params]`` (``tel:`` too when ``tel``;
    ``"Name" <uri>;tag=...`` too when ``name_addr``, as a From/To header carries it)."""
    uri = value
    if name_addr and "<" in value:
        start, end = value.find("<"), value.find(">")
        if end < start:
            raise UsageError(f"{what} {value!r}: '<' without a closing '>'")
        uri = value[start + 1:end]
    forms = f"{SIP_FORM}; or {TEL_FORM}" if tel else SIP_FORM
    scheme, colon, rest = uri.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", *(("tel",) if tel else ())):
        raise UsageError(f"{what} {value!r}: not a SIP URI; {forms}")
    if any(c.isspace() for c in uri):
        raise UsageError(f"{what} {value!r}: a URI has no spaces; {forms}")
    problem = _tel_problem(rest) if scheme == "tel" else _sip_problem(rest)
    if problem:
        raise UsageError(f"{what} {value!r}: {problem}; {TEL_FORM if scheme == 'tel' else SIP_FORM}")
    return value


def _sip_problem(rest: str) -> str | None:
    """What is wrong with the part of a SIP URI after ``sip:``, or None."""
    user, at, hostpart = rest.rpartition("@")
    if not at or not user:
        return "no user@ before the host"
    hostport, _, params = hostpart.partition(";")
    host, port = hostport, ""
    if not hostport.endswith("]") and ":" in hostport:
        host, _, port = hostport.rpartition(":")
    if not _HOST.fullmatch(host):
        return f"bad host {host!r}"
    if port and not (port.isdigit() and 1 <= int(port) <= 65535):
        return f"bad port {port!r} (1..65535)"
    return _params_problem(params)


def _tel_problem(rest: str) -> str | None:
    number, _, params = rest.partition(";")
    if not _TEL.fullmatch(number):
        return f"bad number {number!r}"
    return _params_problem(params)


def _params_problem(params: str) -> str | None:
    if not params:
        return None
    for param in params.split(";"):
        if not _PARAM.fullmatch(param):
            return f"bad parameter {param!r}"
        name, _, val = param.partition("=")
        if name.lower() == "transport" and val.lower() not in TRANSPORTS:
            return f"transport={val} is not one of {', '.join(TRANSPORTS)}"
    return None


def http_url(value: str, what: str) -> str:
    """``value`` if it is an absolute http(s) URL with a host."""
    expected = "expected an http:// or https:// URL, e.g. http://127.0.0.1:8000/webhook"
    try:
        parts = urlsplit(value)
        _ = parts.port  # ValueError when the port is not a number or out of range
    except ValueError as exc:
        raise UsageError(f"{what} {value!r}: {exc}; {expected}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{what} {value!r}: {expected}")
    return value


def webhook_secret(value: str, what: str) -> str:
    """``value`` if an app can verify with it: any text, or ``whsec_`` and a base64 key (as the SDK reads it)."""
    if not value.strip():
        raise UsageError(f"{what} is empty; expected whsec_ followed by base64, as `rtsip mock` prints")
    if value.startswith("whsec_"):
        try:
            key = base64.b64decode(value[6:], validate=True)
        except binascii.Error:
            raise UsageError(f"{what}: the part after whsec_ is not valid base64") from None
        if not key:
            raise UsageError(f"{what}: no key after whsec_")
    return value


def readable_file(path: str | os.PathLike[str], flag: str) -> Path:
    """``path`` if it names an existing file this process may read."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"{flag} {p}: no such file")
    if p.is_dir():
        raise UsageError(f"{flag} {p}: is a directory, expected a file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{flag} {p}: not readable (permission denied)")
    return p


def output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """``path`` if a file can be written there: its directory exists and it is not a directory."""
    p = Path(path)
    parent = p.parent
    if not parent.exists():
        raise UsageError(f"{flag} {p}: directory {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise UsageError(f"{flag} {p}: {parent} is not a directory")
    if p.is_dir():
        raise UsageError(f"{flag} {p}: is a directory, expected a file name")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {p}: directory {parent} is not writable")
    return p


def settings_file(path: Path, flag: str) -> dict[str, Any]:
    """The mock settings in a YAML (or JSON) file: one mapping, its keys not yet checked."""
    readable_file(path, flag)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"{flag} {path}: not YAML or JSON: {_yaml_problem(exc)}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path}: not a text file; expected YAML or JSON settings") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{flag} {path}: expected a mapping of settings (key: value), got a {type(data).__name__}")
    return data


def mock_settings(path: Path, flag: str) -> dict[str, Any]:
    """:func:`settings_file`, its keys and values checked as the mock will (unknown keys, ranges, faults)."""
    from pydantic import ValidationError

    from mock_api.config import MockConfig, describe_validation_error

    data = settings_file(path, flag)
    try:
        MockConfig.model_validate(data)
    except ValidationError as exc:
        raise UsageError(f"{flag} {path}: {describe_validation_error(exc)}") from None
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's several-line message as its problem and line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        return f"line {exc.problem_mark.line + 1}: {exc.problem}"
    return one_line(str(exc))


def audio_file(path: str, flag: str) -> str:
    """``path`` if it is a readable file the project's audio loader decodes (WAV, or anything ffmpeg reads)."""
    from mock_api.audio import load_audio

    readable_file(path, flag)
    try:
        with warnings.catch_warnings():  # pydub warns on stderr when ffmpeg is missing; the error says it
            warnings.simplefilter("ignore")
            load_audio(path, 8000)  # cached: the softphone's own conversion does not decode it again
    except Exception as exc:  # wave, numpy, pydub and ffmpeg each fail their own way
        raise UsageError(f"{flag} {path}: cannot be decoded as audio ({_decode_reason(exc, path)})") from None
    return path


def _decode_reason(exc: Exception, path: str) -> str:
    """The useful part of a decoder failure: ffmpeg's last line names the problem, after pages of banner."""
    if isinstance(exc, FileNotFoundError) and exc.filename in ("ffmpeg", "avconv"):
        return "anything but PCM WAV needs ffmpeg on PATH"
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    last = lines[-1]
    for prefix in (f"{os.path.abspath(path)}: ", f"{path}: "):
        last = last.removeprefix(prefix)
    return last


def dtmf(digits: str, flag: str) -> str:
    """``digits`` if RFC 2833 can send every one of them."""
    if not DTMF_DIGITS.fullmatch(digits):
        raise UsageError(f"{flag} {digits!r}: DTMF digits are 0-9, *, # and A-D")
    return digits


def codecs(value: str, flag: str = "--codec") -> tuple[str, ...]:
    """The comma-separated codec names of ``value`` in canonical spelling, in order of preference."""
    try:
        names = tuple(normalise(c for c in value.split(",") if c.strip()))
    except ValueError as exc:
        raise UsageError(f"{flag} {value}: {exc}") from None
    if not names:
        raise UsageError(f"{flag}: name at least one codec (opus, PCMU, PCMA, G722)")
    return names


def at_least(value: int, lowest: int, flag: str) -> int:
    if value < lowest:
        raise UsageError(f"{flag} must be at least {lowest} (got {value})")
    return value


def positive_seconds(value: float, flag: str) -> float:
    """``value`` if it is a number above 0 (argparse's float() also takes nan and negatives)."""
    if not value > 0:
        raise UsageError(f"{flag} must be a positive number of seconds (got {value:g})")
    return value


def seconds_or_zero(value: float, flag: str) -> float:
    if not value >= 0:
        raise UsageError(f"{flag} must be 0 or more seconds (got {value:g})")
    return value


def port(value: int, flag: str, lowest: int = 1) -> int:
    """``value`` if it is 0 (a free one) or a port in ``lowest``..65535."""
    if value != 0 and not lowest <= value <= 65535:
        raise UsageError(f"{flag} must be 0 (a free port) or in {lowest}..65535 (got {value})")
    return value


_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header carries unchanged


def token(value: str, what: str) -> str:
    """``value`` if a client can send it in a header as it is: visible ASCII, no spaces."""
    if not value:
        raise UsageError(f"{what} is empty; expected a token of visible ASCII characters, e.g. a random hex string")
    if not _TOKEN.fullmatch(value):
        raise UsageError(f"{what}: only visible ASCII characters (no spaces, no control or non-ASCII characters) "
                         "can be sent in the X-Rtsip-Token header")
    return value


def host_name(value: str, what: str) -> str:
    """``value`` as the mock compares it with a ``Host`` header's name (lower case, an IPv6 address without
    its brackets) if it is a DNS name or an IP address, without scheme, port or path."""
    expected = "expected a host name or address as clients send it in Host, e.g. mock.internal or 10.0.0.5"
    name = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    if "/" in value:
        raise UsageError(f"{what} {value!r}: a host, not a URL; {expected}")
    if not _is_address(name) and not _HOST.fullmatch(value):
        raise UsageError(f"{what} {value!r}: not a host name (no port, no spaces); {expected}")
    return name.lower()


def _is_address(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
