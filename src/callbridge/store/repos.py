"""One unit of work: a session and the repositories that share it."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from callbridge.store.agents import SqlAgentStore
from callbridge.store.calls import SqlCalls
from callbridge.store.directory import SqlDialplanTokens, SqlDirectory, SqlExtensions
from callbridge.store.pbxes import SqlPbxStore
from callbridge.store.secrets import SecretBox
from callbridge.store.users import SqlFailureStore, SqlTokenStore, SqlUserStore


class Repos:
    """Repositories bound to one session. The edge (a request, an event batch) commits."""

    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box
        self.users = SqlUserStore(session)
        self.tokens = SqlTokenStore(session)
        self.failures = SqlFailureStore(session)
        self.pbxes = SqlPbxStore(session, box)
        self.calls = SqlCalls(session)
        self.directory = SqlDirectory(session)
        self.extensions = SqlExtensions(session)
        self.dialplan_tokens = SqlDialplanTokens(session, box)
        self.agents = SqlAgentStore(session)

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()
