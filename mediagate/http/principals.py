"""Who is calling the admin API or using the console: a `Principal`, with its role.

Three roles: `admin` (everything), `viewer` (reads everything), and a team's `member` (reads
its own team's records, or only its own key's when it has no team). The admin API finds the
principal from a bearer key (mediagate.http.admin); the console from its signed session
(mediagate.http.sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mediagate.errors import PermissionDenied

Role = Literal["admin", "viewer", "member"]


@dataclass(frozen=True)
class Principal:
    """Who is calling the admin API or signed in to the console."""

    name: str  # the admin key's name, the client key's, or the identity provider's user
    role: Role
    team: str | None = None  # a member's team (None: the member sees only its own key)

    def require(self, role: Literal["admin", "viewer"]) -> None:
        """403 unless the caller has `role` (an admin has every role)."""
        if self.role == "admin" or (role == "viewer" and self.role == "viewer"):
            return
        raise PermissionDenied(f"This needs an {role} key.", code="permission_denied")

    def scope(self) -> tuple[str | None, str | None]:
        """(team, key) every read of a member is narrowed to; (None, None) for admin/viewer."""
        if self.role != "member":
            return None, None
        return (self.team, None) if self.team else (None, self.name)

    def may_act_with(self, key_name: str, key_team: str | None) -> bool:
        """Whether this principal may send requests with the key (the console's playground):
        an admin with any key; a member with its team's keys (or, without a team, its own)."""
        if self.role == "admin":
            return True
        if self.role != "member":
            return False
        if self.team:
            return key_team == self.team
        return key_name == self.name
