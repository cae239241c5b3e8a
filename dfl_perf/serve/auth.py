"""Who may use the server: the bind-address rule and the token check (standard library only)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from typing import Optional

__all__ = ["TokenCheck", "ServeSetupError", "resolve_token", "is_loopback", "check_bind"]


class ServeSetupError(ValueError):
    """The server's settings are unsafe or wrong; the message says what to change."""


def resolve_token(token: Optional[str]) -> Optional[str]:
    """The token given, else ``DFL_PERF_SERVE_TOKEN``, else None; a blank token is an error."""
    from dfl_perf.remote.client import TOKEN_ENV

    value = token if token is not None else os.environ.get(TOKEN_ENV)
    if value is None:
        return None
    if not value.strip():
        raise ServeSetupError("the token is empty: give a non-empty --token or %s" % TOKEN_ENV)
    if value != value.strip() or any(ord(c) < 33 or ord(c) > 126 for c in value):
        raise ServeSetupError("the token must be printable ASCII without spaces (it travels in an HTTP header)")
    return value


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost': only this machine can connect."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: Optional[str]) -> None:
    """Refuse to listen beyond this machine without a token."""
    from dfl_perf.remote.client import TOKEN_ENV

    if token is None and not is_loopback(host):
        raise ServeSetupError("refusing to listen on %s without a token: anyone who can reach it could use the "
                              "model. Give --token T (or set %s), or keep the default host 127.0.0.1"
                              % (host, TOKEN_ENV))


class TokenCheck:
    """``allows(authorization_header)``: the header is ``Bearer <token>``; compared in constant time.

    Both sides are hashed first, so neither the token's content nor its length shows in the time a
    refusal takes. Without a token every request is allowed (loopback only, see ``check_bind``).
    """

    def __init__(self, token: Optional[str]) -> None:
        self._digest = None if token is None else hashlib.sha256(token.encode("ascii")).digest()

    @property
    def required(self) -> bool:
        return self._digest is not None

    def allows(self, authorization: Optional[str]) -> bool:
        if self._digest is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        digest = hashlib.sha256(given.strip().encode("utf-8", "replace")).digest()
        matches = hmac.compare_digest(digest, self._digest)
        return matches and scheme.lower() == "bearer"
