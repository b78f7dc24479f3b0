"""Admin API tokens: created with ``servion tokens create --role``, kept only as SHA-256.

Roles are ordered: a ``viewer`` reads status, history and reports; a
``deployer`` also deploys, rolls back and loads or unloads models; an
``admin`` may do everything. The server's own ``--admin-token`` acts as admin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from servion.errors import InvalidInput, quoted
from servion.registry import ModelRegistry
from servion.registry.naming import NAME_RE
from servion.state import Database, Track, utcnow

metadata = sa.MetaData()

# Only a SHA-256 of each token is kept.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("revoked_at", sa.String(32), nullable=True),
)


def _create_tokens_v1(conn: sa.Connection) -> None:
    tokens.create(conn, checkfirst=True)


TOKENS = Track("tokens", (_create_tokens_v1,))

ROLES: Final = ("viewer", "deployer", "admin")
RANK: Final = {role: i for i, role in enumerate(ROLES)}
PREFIX: Final = "svt_"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    role: str
    created_at: str
    revoked_at: str | None


def digest(token: str | bytes) -> str:
    raw = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(raw).hexdigest()


def create_token(registry: ModelRegistry, role: str, name: str) -> tuple[TokenInfo, str]:
    """A new token of ``role``; the token itself is returned once and never stored."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}, got {quoted(role)}")
    if not NAME_RE.fullmatch(name):
        raise InvalidInput(f"token name {quoted(name)}: use 3-64 letters, digits, '_' or '-'")
    token_id = secrets.token_hex(4)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = utcnow()
    with _database(registry).engine.begin() as conn:
        conn.execute(
            tokens.insert().values(
                id=token_id, name=name, role=role, sha256=digest(token), created_at=now
            )
        )
        Database.bump(conn)  # workers reload their token table
    return TokenInfo(token_id, name, role, now, None), token


def list_tokens(registry: ModelRegistry) -> list[TokenInfo]:
    with _database(registry).engine.connect() as conn:
        rows = conn.execute(sa.select(tokens).order_by(tokens.c.created_at)).all()
    return [TokenInfo(r.id, r.name, r.role, r.created_at, r.revoked_at) for r in rows]


def revoke_token(registry: ModelRegistry, token_id: str) -> None:
    t = tokens
    with _database(registry).engine.begin() as conn:
        done = conn.execute(
            t.update()
            .where((t.c.id == token_id) & t.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
        if done.rowcount == 0:
            raise InvalidInput(f"no active token with id {quoted(token_id)}")
        Database.bump(conn)


def active_digests(registry: ModelRegistry) -> dict[str, tuple[str, str]]:
    """SHA-256 → (role, name) of every token not revoked."""
    t = tokens
    with _database(registry).engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.revoked_at.is_(None))).all()
    return {r.sha256: (r.role, r.name) for r in rows}


class TokenTable:
    """One worker's view of the tokens, refreshed when the registry changes."""

    def __init__(self, admin_token: str | None) -> None:
        self._admin = admin_token.encode() if admin_token else None
        self._digests: dict[str, tuple[str, str]] = {}

    def refresh(self, registry: ModelRegistry) -> None:
        self._digests = active_digests(registry)

    @property
    def any(self) -> bool:
        return self._admin is not None or bool(self._digests)

    def identify(self, authorization: bytes) -> tuple[str, str] | None:
        """(role, principal) for an ``Authorization: Bearer`` value, or None."""
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        token = token.strip()
        if self._admin is not None and hmac.compare_digest(token, self._admin):
            return "admin", "admin-token"
        found = self._digests.get(digest(token))
        if found is None:
            return None
        role, name = found
        return role, f"token:{name}"


def _database(registry: ModelRegistry) -> Database:
    registry.database.migrate(TOKENS)
    return registry.database
