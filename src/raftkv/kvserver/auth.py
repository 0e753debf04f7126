"""Authentication on a node: password hashes, tokens, and who a request comes from.

Theory of operation
-------------------
The rules of users, roles and permissions are replicated state (``raftkv.kv.auth``); this module is what a
node adds around them, none of which may run inside the state machine (clocks, randomness, slow hashes):

* **Passwords** are stored as salted scrypt hashes (``hashlib.scrypt``: n=2^14, r=8, p=1, a 16-byte salt;
  ~50 ms of CPU here). The node that receives ``user add`` or ``user passwd`` hashes the password before it
  proposes the command, so a password never reaches the log, the snapshots or the data dir. Hashing and
  checking run in worker threads (OpenSSL's scrypt releases the GIL), at most :data:`HASH_THREADS` at once,
  so that a flood of authentications slows the authentications, not the node.
* **Tokens.** ``Authenticate(name, password)`` answers a token that the client carries in the header of every
  request. It is signed (HMAC-SHA256) with the secret that ``auth enable`` put in the replicated store, so
  every member can check a token any member issued, and names the user, the auth revision of its last
  password change (``since``) and an expiry (``--auth-token-ttl``, 300 s by default, on the issuing node's
  clock). A token stops working when it expires, when its user's password changes or the user is deleted,
  and when authentication is enabled again (a new secret): the client then authenticates again by itself.
* **Who.** With authentication on, a request is from the user its token names; without a token, from the
  common name of its verified TLS client certificate (``--client-cert-auth``; etcd's rule); otherwise from
  nobody, which every check refuses (``user name is empty``).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import os
import time
from collections.abc import Callable
from typing import Final

import msgspec

from raftkv.kv.auth import AuthStore
from raftkv.kv.commands import (
    AuthEnable,
    AuthenticateResult,
    ErrorResult,
    UserAdd,
    UserChangePassword,
)
from raftkv.kv.errors import AuthError, ErrorCode

SCRYPT_N: Final = 1 << 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
HASH_THREADS: Final = 2
"""Password hashes computed at once on a node (each takes ~50 ms of a core)."""
TOKEN_PREFIX: Final = "rkv1"
_CACHE_MAX: Final = 4096


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64 parts): what the store keeps instead of the password."""
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 << 20)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` (from :func:`hash_password`) was made from."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        mine = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), maxmem=64 << 20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(mine, _unb64(digest))


@functools.cache
def _dummy_hash() -> str:
    """Checked against for a user that does not exist, so that the answer takes as long as for one that does."""
    return hash_password("not a password", b"\0" * 16)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    """Strict: a character outside the URL-safe alphabet is an error (``binascii.Error``, a ValueError)."""
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


class _Claims(msgspec.Struct, frozen=True, array_like=True):
    user: str
    since: int
    expires_ms: int


_CLAIMS_ENCODER: Final = msgspec.msgpack.Encoder()
_CLAIMS_DECODER: Final = msgspec.msgpack.Decoder(_Claims)


def invalid_token(why: str) -> AuthError:
    return AuthError(ErrorCode.INVALID_TOKEN, f"invalid auth token: {why}; authenticate again")


class Authenticator:
    """A node's side of authentication, over the state machine's applied auth store (``store()``)."""

    def __init__(
        self, store: Callable[[], AuthStore], token_ttl_s: int = 300, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.token_ttl_s = token_ttl_s
        self.clock = clock
        self._hashing = asyncio.Semaphore(HASH_THREADS)
        self._verified: dict[str, _Claims] = {}
        """Tokens whose signature checked out, under ``_verified_secret`` (a new secret empties it)."""
        self._verified_secret = b""

    @property
    def touched(self) -> bool:
        """Whether the auth store ever changed: from then on writes are proposed as ``Authed``."""
        return self.store().revision > 0

    # --- tokens ----------------------------------------------------------------------------------------

    def issue(self, user: str) -> str:
        store = self.store()
        record = store.users[user]
        claims = _Claims(user, record.since, int((self.clock() + self.token_ttl_s) * 1000))
        body = _b64(_CLAIMS_ENCODER.encode(claims))
        return f"{TOKEN_PREFIX}.{body}.{_b64(self._sign(store.secret, body))}"

    @staticmethod
    def _sign(secret: bytes, body: str) -> bytes:
        return hmac.new(secret, body.encode("utf-8", "replace"), hashlib.sha256).digest()

    def identify(self, token: str, cert_user: str | None) -> str:
        """Who a request comes from: ``""`` (nobody) while authentication is off or without credentials.
        Raises :class:`AuthError` (``INVALID_TOKEN``) for a token that does not check out."""
        store = self.store()
        if not store.enabled:
            return ""
        if token:
            return self._check_token(store, token)
        return cert_user or ""

    def _check_token(self, store: AuthStore, token: str) -> str:
        if self._verified_secret != store.secret:
            self._verified.clear()
            self._verified_secret = store.secret
        claims = self._verified.get(token)
        if claims is None:
            parts = token.split(".")
            if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
                raise invalid_token("not a raftkv token")
            # The signature's one canonical spelling: base64 decoders skip stray characters, and a token with
            # some appended must not pass (found by tests/fuzz/test_decoders.py).
            expected = _b64(self._sign(store.secret, parts[1])).encode()
            good = hmac.compare_digest(parts[2].encode("utf-8", "replace"), expected)
            try:
                claims = _CLAIMS_DECODER.decode(_unb64(parts[1])) if good else None
            except (ValueError, msgspec.DecodeError):
                raise invalid_token("it does not decode") from None
            if claims is None:
                raise invalid_token("not signed by this cluster (or signed before authentication was last enabled)")
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[token] = claims
        if claims.expires_ms < self.clock() * 1000:
            raise invalid_token("it expired")
        record = store.users.get(claims.user)
        if record is None or record.since != claims.since:
            raise invalid_token(f"user {claims.user!r} was deleted or changed its password since")
        return claims.user

    # --- passwords -------------------------------------------------------------------------------------

    async def authenticate(self, name: str, password: str) -> AuthenticateResult | ErrorResult:
        """A token for ``name`` if ``password`` is its password (checked in a worker thread)."""
        store = self.store()
        if not store.enabled:
            return ErrorResult(ErrorCode.AUTH_NOT_ENABLED, "authentication is not enabled")
        record = store.users.get(name)
        stored = record.password_hash if record is not None and not record.no_password else _dummy_hash()
        async with self._hashing:
            good = await asyncio.to_thread(verify_password, password, stored)
        record = self.store().users.get(name)  # it may have changed while the hash ran
        if not good or record is None or record.no_password or record.password_hash != stored:
            return ErrorResult(ErrorCode.AUTH_FAILED, "authentication failed, invalid user ID or password")
        return AuthenticateResult(self.issue(name))

    async def prepare(
        self, change: UserAdd | UserChangePassword | AuthEnable
    ) -> UserAdd | UserChangePassword | AuthEnable:
        """The command to propose for ``change``: its password replaced by a hash, a new enable's secret drawn."""
        if isinstance(change, AuthEnable):
            return AuthEnable(os.urandom(32))
        if not change.password:
            return change
        async with self._hashing:
            hashed = await asyncio.to_thread(hash_password, change.password)
        return msgspec.structs.replace(change, password="", password_hash=hashed)
