"""The dashboard's key browser (``/kv/keys`` on the node's HTTP port): list a prefix, read a key, as a user.

``GET /kv/keys?prefix=P`` lists the keys under ``P`` with their values (at most :data:`LIMIT`, with their
versions and mod revisions); ``GET /kv/keys?key=K`` reads one key. Serializable reads: this node's store, as
far as it has applied (the answer says at which revision), so that every node's page can browse. While
authentication is on, the request must carry HTTP Basic credentials of a raftkv user: the password is
checked as ``Authenticate`` checks it, and the read runs as that user, refused (``403``) where the user's
roles do not allow it. Basic credentials travel in clear on the plain HTTP port: use it on a trusted network.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from raftkv.kv.commands import AuthenticateResult, ErrorResult, Range, RangeResult
from raftkv.kv.errors import ErrorCode
from raftkv.kv.keys import prefix_end

LIMIT: Final = 100
"""Keys one listing shows (the page says when there are more)."""
VALUE_BYTES: Final = 4096
"""Bytes of a value shown (the rest is cut, and the page says so)."""


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="backslashreplace")


class KeyBrowser:
    def __init__(self, service: Any) -> None:
        self.service = service
        """The node's ``KVService``: its reads, and its authenticator."""

    async def __call__(self, query: dict[str, str], authorization: str) -> tuple[int, Any]:
        user = ""
        if self.service.kv.auth.enabled:
            who = await self._user(authorization)
            if isinstance(who, tuple):
                return who
            user = who
        if "key" in query:
            rng = Range(query["key"].encode())
        else:
            prefix = query.get("prefix", "").encode()
            rng = Range(prefix, prefix_end(prefix) if prefix else b"\0", limit=LIMIT)
        (result,) = await self.service.execute([(rng, True)], 5.0, user)
        if isinstance(result, ErrorResult):
            status = 403 if result.code == ErrorCode.PERMISSION_DENIED else 400
            return status, {"error": result.message}
        assert isinstance(result, RangeResult)
        return 200, {
            "revision": result.revision,
            "more": result.more,
            "kvs": [
                {
                    "key": _text(kv.key),
                    "value": _text(kv.value[:VALUE_BYTES]),
                    "truncated": len(kv.value) > VALUE_BYTES,
                    "version": kv.version,
                    "mod_revision": kv.mod_revision,
                    "lease": kv.lease,
                }
                for kv in result.kvs
            ],
        }

    async def _user(self, authorization: str) -> str | tuple[int, Any]:
        """The user of valid Basic credentials, or the (status, body) refusing them."""
        scheme, _, encoded = authorization.partition(" ")
        try:
            name, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if scheme.lower() != "basic" or not sep:
            return 401, {"error": "authentication is on: give a raftkv user name and password"}
        result = await self.service.auth.authenticate(name, password)
        if not isinstance(result, AuthenticateResult):
            message = result.message if isinstance(result, ErrorResult) else "authentication failed"
            return 401, {"error": message}
        return name
