"""Signed webhook bodies: a receiver can tell a move forgetmenot asked for from anyone else's.

A webhook that makes a version live is a remote control for serving; without a signature, anyone
who can reach the receiver can move production. Each body is signed with HMAC-SHA256 under a
shared secret, over the timestamp and the exact bytes sent (`<timestamp>.<body>`), the scheme
Stripe and Slack use: the timestamp bounds replays, the body cannot be changed, and the secret
never travels. A receiver verifies with `verify` (or the five lines in docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE = "X-Forgetmenot-Signature"
TIMESTAMP = "X-Forgetmenot-Timestamp"
SCHEME = "sha256="
TOLERANCE_S = 300
_STAMP_DIGITS = 12  # seconds since 1970 until the year 33658


class InvalidSignature(ValueError):
    """The request was not signed with the shared secret, was changed, or is too old."""


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return SCHEME + digest


def sign(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that go with `body`."""
    stamp = int(time.time() if now is None else now)
    return {TIMESTAMP: str(stamp), SIGNATURE: signature(secret, stamp, body)}


def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           tolerance_s: float = TOLERANCE_S, now: float | None = None) -> None:
    """Raise InvalidSignature unless `body` came signed with `secret` within `tolerance_s`, and
    nothing else whatever the headers hold. Header names are matched without regard to case, as
    HTTP has them."""
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    raw_stamp = lowered.get(TIMESTAMP.lower(), "")
    given = lowered.get(SIGNATURE.lower(), "")
    # Whole seconds in ASCII digits only: int() also reads "²", "1_0" and " 1", and a timestamp
    # of thousands of digits would overflow the subtraction below.
    plain = raw_stamp.isascii() and raw_stamp.isdigit() and len(raw_stamp) <= _STAMP_DIGITS
    if not plain or not given:
        raise InvalidSignature(f"{TIMESTAMP} and {SIGNATURE} headers are required")
    stamp = int(raw_stamp)
    if abs((time.time() if now is None else now) - stamp) > tolerance_s:
        raise InvalidSignature(f"the timestamp is more than {tolerance_s:g} s away from now")
    expected = signature(secret, stamp, body).encode()
    # Compared as bytes: compare_digest refuses str with characters outside ASCII.
    if not hmac.compare_digest(expected, given.encode("utf-8", "replace")):
        raise InvalidSignature("the signature does not match the body")
