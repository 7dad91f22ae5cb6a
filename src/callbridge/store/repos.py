"""One unit of work: a session and the repositories that share it."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, AsyncSessionTransaction

from callbridge.domain.errors import StoreUnavailable
from callbridge.services.calllog import BatchStores
from callbridge.store.agents import SqlAgentStore
from callbridge.store.calls import SqlCalls, SqlCallTypes
from callbridge.store.comments import SqlComments
from callbridge.store.connectors import SqlConnectors
from callbridge.store.directory import SqlDialplanTokens, SqlDirectory, SqlExtensions
from callbridge.store.mail import SqlMail
from callbridge.store.pbxes import SqlPbxStore
from callbridge.store.queues import SqlQueues
from callbridge.store.recordings import SqlRecordings
from callbridge.store.retention import SqlRetention
from callbridge.store.secrets import SecretBox
from callbridge.store.shares import SqlShares
from callbridge.store.softphones import SqlSoftphones
from callbridge.store.tasks import SqlTasks, SqlTeams
from callbridge.store.transcripts import SqlTranscripts
from callbridge.store.users import SqlFailureStore, SqlSessionStore, SqlTokenStore, SqlUserStore
from callbridge.store.voicemails import SqlVoicemails


class Repos:
    """Repositories bound to one session. The edge (a request, an event batch) commits."""

    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        self.session = session
        self.box = box
        self.users = SqlUserStore(session)
        self.tokens = SqlTokenStore(session)
        self.failures = SqlFailureStore(session)
        self.sessions = SqlSessionStore(session)
        self.pbxes = SqlPbxStore(session, box)
        self.calls = SqlCalls(session)
        self.call_types = SqlCallTypes(session)
        self.directory = SqlDirectory(session)
        self.extensions = SqlExtensions(session)
        self.dialplan_tokens = SqlDialplanTokens(session, box)
        self.agents = SqlAgentStore(session)
        self.recordings = SqlRecordings(session)
        self.shares = SqlShares(session)
        self.comments = SqlComments(session)
        self.retention = SqlRetention(session)
        self.transcripts = SqlTranscripts(session)
        self.queues = SqlQueues(session)
        self.tasks = SqlTasks(session)
        self.teams = SqlTeams(session)
        self.mail = SqlMail(session)
        self.connectors = SqlConnectors(session, box)
        self.softphones = SqlSoftphones(session, box)
        self.voicemails = SqlVoicemails(session)

    def savepoint(self) -> AsyncSessionTransaction:
        """A savepoint in this unit: ``async with repos.savepoint():`` — work in it that fails is
        undone alone, and the rest of the unit stands (PostgreSQL refuses every statement of a
        transaction after an error, unless the error is contained in a savepoint)."""
        return self.session.begin_nested()

    async def batch_stores(self) -> BatchStores:
        """The stores ingest of a batch uses. On PostgreSQL, statements on the driver itself
        that take the whole batch as arrays (:mod:`callbridge.store.calls_pg`); elsewhere the
        repositories above."""
        if self.session.get_bind().dialect.name == "postgresql":
            from callbridge.store.calls_pg import PgIngestBatch

            batch = await PgIngestBatch.of(self.session)
            return BatchStores(batch, batch, batch)
        return BatchStores(self.calls, self.extensions, self.directory)

    async def commit(self) -> None:
        """Commit now; a commit the database refuses raises ``StoreUnavailable`` (see
        ``Database.session``)."""
        try:
            await self.session.commit()
        except DBAPIError as exc:
            await self.session.rollback()
            raise StoreUnavailable(
                "the database could not store the change; nothing was saved, try again in a moment"
            ) from exc

    async def rollback(self) -> None:
        await self.session.rollback()
