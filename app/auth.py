"""Client authentication: which configured client key, if any, a request presents."""

from __future__ import annotations

import hashlib
import hmac

from .errors import AuthenticationFailed


class ClientKeys:
    """Client keys held only as SHA-256 digests and compared in constant time."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._digests = [
            (name, hashlib.sha256(key.encode()).digest()) for name, key in keys.items()
        ]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, authorization: str | None) -> str:
        """The key's name for an `Authorization: Bearer …` header, or AuthenticationFailed."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'."
            )
        presented = hashlib.sha256(token.strip().encode()).digest()
        found = None
        # Compare against every key so timing does not tell which one (or how many) matched.
        for name, digest in self._digests:
            if hmac.compare_digest(presented, digest):
                found = name
        if found is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return found
