"""Images the gateway hosts itself, served at unguessable URLs.

Needed when a client asks for `url` but the route only returned base64. The interface is small
on purpose, so other backends can stand behind it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_NAME = re.compile(r"^[A-Za-z0-9_-]{32,64}\.(png|jpg|webp|gif)$")
CONTENT_TYPES = {ext: kind for kind, ext in _EXTENSIONS.items()}


class LocalImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, data: bytes, content_type: str) -> str:
        name = f"{secrets.token_urlsafe(32)}.{_EXTENSIONS.get(content_type, 'png')}"
        await asyncio.to_thread(self._write, name, data)
        return name

    def _write(self, name: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.root / name)  # readers never see a half-written file

    def path(self, name: str) -> Path | None:
        """The file behind a name, or None (names are checked so no path can escape root)."""
        if not _NAME.match(name):
            return None
        path = self.root / name
        return path if path.is_file() else None
