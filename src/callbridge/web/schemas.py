"""Pydantic models at the API edge."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, TypeVar

from annotated_types import Interval
from pydantic import BaseModel, ConfigDict, Field

from callbridge.domain.connectors import ExternalRef
from callbridge.domain.users import ApiToken, Role, User

T = TypeVar("T")

MAX_ID = 2**31 - 1
"""The largest row id both databases store: ids are INTEGER columns, 32-bit on PostgreSQL."""

Id = Annotated[int, Interval(ge=1, le=MAX_ID)]
"""A row id in a path, a query or a body: every route and schema takes ids as this type, so one
that no row can have is answered 422 with words, not sent to the database (which would fail)."""


class Page(BaseModel, Generic[T]):
    """Every list endpoint answers ``{"items": [...], "next": <cursor or null>}``."""

    items: list[T]
    next: str | None = None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    id: int
    name: str
    display_name: str
    role: Role
    active: bool
    last_login_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            name=user.name,
            display_name=user.display_name,
            role=user.role,
            active=user.active,
            last_login_at=user.last_login_at,
        )


class MeOut(UserOut):
    time_zone: str = Field(description="The IANA zone pages show your times in (yours or the hub's).")
    time_zone_is_default: bool = Field(description="True while you follow the hub's default zone.")

    @classmethod
    def mine(cls, user: User, default_zone: str) -> MeOut:
        return cls(
            **UserOut.of(user).model_dump(),
            time_zone=user.zone_or(default_zone),
            time_zone_is_default=not user.time_zone,
        )


class MeUpdate(Strict):
    time_zone: str | None = Field(
        default=None,
        max_length=64,
        description="An IANA zone name (Europe/Berlin); empty string or null: the hub's default.",
    )


class UserCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str | None = Field(default=None, max_length=256)
    display_name: str = Field(default="", max_length=200)


class UserCreated(BaseModel):
    user: UserOut
    password: str | None = Field(None, description="The generated password, shown once.")


class UserUpdate(Strict):
    role: Role | None = None
    active: bool | None = None


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, token: ApiToken) -> TokenOut:
        return cls(
            id=token.id,
            name=token.name,
            prefix=token.prefix,
            created_at=token.created_at,
            last_used_at=token.last_used_at,
            revoked=not token.active,
        )


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=100)


class TokenCreated(BaseModel):
    token: TokenOut
    secret: str = Field(description="Send as 'Authorization: Bearer <secret>'. Shown once.")


class PasswordChange(Strict):
    current: str = Field(max_length=1000)
    new: str = Field(max_length=1000)


class ExternalOut(BaseModel):
    """A record in a connected ERP: ``{"connector", "kind", "id", "url"}`` (``url``: its page)."""

    connector: str
    kind: str
    id: str
    url: str

    @classmethod
    def of(cls, ref: ExternalRef) -> ExternalOut:
        return cls(connector=ref.connector, kind=ref.kind.value, id=ref.id, url=ref.url)
