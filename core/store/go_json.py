"""Go encoding/json emulation (Marshal, MarshalIndent, Encoder) for byte-identical DMR artifacts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

_HEX = "0123456789abcdef"
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}


class GoMap(dict[str, Any]):
    """A Go map: its keys are sorted when marshalled (a plain dict keeps struct field order)."""


def _escape_string(text: str) -> str:
    out: list[str] = ['"']
    for char in text:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or char in "<>&" or code in (0x2028, 0x2029):
            # Go escapes control characters, HTML-sensitive characters and JS line separators.
            out.append("\\u" + "".join(_HEX[(code >> shift) & 0xF] for shift in (12, 8, 4, 0)))
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # a lone surrogate is invalid UTF-8; Go writes U+FFFD
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _format_float(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {value!r}")
    magnitude = abs(value)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        # strconv 'f' with shortest precision: the digits of repr() without an exponent.
        text = format(Decimal(repr(value)), "f")
        return text[:-2] if text.endswith(".0") else text
    text = repr(value)  # shortest digits with an exponent, like strconv 'e' with -1
    mantissa, exponent = text.split("e")
    sign = exponent[0] if exponent[0] in "+-" else "+"
    digits = exponent.lstrip("+-").lstrip("0") or "0"
    if sign == "+" and len(digits) < 2:
        digits = digits.rjust(2, "0")
    return f"{mantissa}e{sign}{digits}"


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_format_float(value))
    elif isinstance(value, str):
        out.append(_escape_string(value))
    elif isinstance(value, datetime):
        out.append(_escape_string(rfc3339_nano(value)))
    elif isinstance(value, Mapping):
        items = sorted(value.items()) if isinstance(value, GoMap) else list(value.items())
        out.append("{")
        for index, (key, item) in enumerate(items):
            if index:
                out.append(",")
            out.append(_escape_string(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"json: unsupported type: {type(value).__name__}")


def marshal(value: Any) -> bytes:
    """Encode like Go's json.Marshal: compact, struct order, GoMap keys sorted, HTML-escaped."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")


def encoder_encode(value: Any) -> bytes:
    """Encode like Go's json.NewEncoder(w).Encode: Marshal plus a trailing newline."""
    return marshal(value) + b"\n"


def indent(compact: bytes, prefix: str = "", indent_unit: str = "  ") -> bytes:
    """Re-indent compact JSON like Go's json.Indent (empty arrays and objects stay `[]` / `{}`)."""
    text = compact.decode("utf-8")
    out: list[str] = []
    depth = 0
    in_string = False
    escaped = False
    need_newline = False  # an opening bracket was just written; defer its newline until non-empty
    for char in text:
        if in_string:
            out.append(char)
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char in " \t\r\n":
            continue
        if need_newline and char not in "]}":
            need_newline = False
            depth += 1
            out.append("\n" + prefix + indent_unit * depth)
        if char == '"':
            in_string = True
            out.append(char)
        elif char in "[{":
            out.append(char)
            need_newline = True
        elif char in "]}":
            if need_newline:
                need_newline = False  # empty container
            else:
                depth -= 1
                out.append("\n" + prefix + indent_unit * depth)
            out.append(char)
        elif char == ",":
            out.append(",\n" + prefix + indent_unit * depth)
        elif char == ":":
            out.append(": ")
        else:
            out.append(char)
    return "".join(out).encode("utf-8")


def marshal_indent(value: Any, prefix: str = "", indent_unit: str = "  ") -> bytes:
    """Encode like Go's json.MarshalIndent (no trailing newline)."""
    return indent(marshal(value), prefix, indent_unit)


def rfc3339_nano(moment: datetime, *, nanosecond: int | None = None) -> str:
    """Format like Go's time.RFC3339Nano: fraction trimmed of trailing zeros, `Z` for a zero offset.

    Args:
        moment: an aware datetime (a naive one is taken as local time).
        nanosecond: the sub-second part in nanoseconds, overriding moment.microsecond.
    """
    if moment.tzinfo is None:
        moment = moment.astimezone()
    nanos = moment.microsecond * 1000 if nanosecond is None else nanosecond
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    offset = moment.utcoffset() or timedelta(0)
    if offset == timedelta(0):
        return text + "Z"
    total_minutes = int(offset.total_seconds()) // 60
    sign = "+" if total_minutes >= 0 else "-"
    hours, minutes = divmod(abs(total_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def time_from_ns(unix_ns: int, *, local: bool = True) -> str:
    """RFC3339Nano text of a Unix time in nanoseconds, in local time like Go's time.Now()."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    if local:
        moment = moment.astimezone()
    return rfc3339_nano(moment, nanosecond=nanos)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC3339 time with up to nanosecond precision (cut to microseconds)."""
    body = text.strip()
    if body.endswith(("Z", "z")):
        body, tz = body[:-1], UTC
    else:
        sign_at = max(body.rfind("+"), body.rfind("-"))
        if sign_at <= 10:
            raise ValueError(f"no time zone in {text!r}")
        zone = body[sign_at:]
        body = body[:sign_at]
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        delta = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-delta if zone[0] == "-" else delta)
    if "." in body:
        whole, fraction = body.split(".", 1)
        body = f"{whole}.{fraction[:6].ljust(6, '0')}"
        moment = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S.%f")
    else:
        moment = datetime.strptime(body, "%Y-%m-%dT%H:%M:%S")
    return moment.replace(tzinfo=tz)
