"""Running the edge and the consumers inside one asyncio loop, and stopping them in order."""

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import uvicorn
from faststream.kafka import KafkaBroker
from kafka.errors import KafkaError
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conformity_pipeline import metrics
from conformity_pipeline.errors import ConfigError
from conformity_pipeline.lag import group_lag
from conformity_pipeline.schema import assert_at_head, database_unreachable
from conformity_pipeline.settings import Settings
from consumers.registry import REACTIONS, default_reactions
from consumers.runtime import Lifecycle, Reaction, subscribe
from ingest.app import create_app
from ingest.publisher import KafkaPublisher

logger = logging.getLogger(__name__)


@dataclass
class Edge:
    """A running edge: the uvicorn server and its Kafka publisher."""

    server: uvicorn.Server
    publisher: KafkaPublisher
    task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port the edge listens on (the real one when INGEST_PORT is 0)."""
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Connect the publisher, serve, and return once the socket listens."""
        await self.publisher.start()
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise ConfigError("The edge stopped during start-up; is the port taken?")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop taking requests, finish those in flight, then close the publisher."""
        self.server.should_exit = True
        if self.task is not None:
            await self.task
        await self.publisher.stop()


def build_edge(settings: Settings) -> Edge:
    """An edge for `settings`; nothing runs until `start()`."""
    settings.require_signing()
    publisher = KafkaPublisher(settings)
    config = uvicorn.Config(
        create_app(settings, publisher),
        host=settings.ingest_host,
        port=settings.ingest_port,
        log_config=None,
        access_log=False,
        lifespan="off",
    )
    return Edge(uvicorn.Server(config), publisher)


@dataclass
class Consumers:
    """The running reactions: one FastStream broker, one consumer group per reaction."""

    settings: Settings
    names: Sequence[str]
    engine: AsyncEngine
    broker: KafkaBroker = field(init=False)
    reactions: list[Reaction] = field(init=False)
    _lag_task: asyncio.Task[None] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.names) - set(REACTIONS))
        if unknown:
            raise ConfigError(f"Unknown consumers {unknown}; known: {sorted(REACTIONS)}.")
        self.broker = KafkaBroker(
            self.settings.require_kafka().split(","),
            acks="all",
            enable_idempotence=self.settings.kafka_idempotent_producer,
            client_id=f"{self.settings.kafka_consumer_group_prefix}-consumers",
            logger=logging.getLogger("consumers.broker"),
        )
        self.reactions = [REACTIONS[name]() for name in self.names]
        for reaction in self.reactions:
            subscribe(self.broker, reaction, self.engine, self.settings)

    async def start(self) -> None:
        """Refuse a schema that is not at head, then join the consumer groups."""
        try:
            async with self.engine.connect() as connection:
                await connection.run_sync(assert_at_head)
        except OperationalError as error:
            raise database_unreachable(self.settings.sqlalchemy_url, error) from error
        for reaction in self._with_lifecycle():
            await reaction.start(self.engine, self.settings)
        await self.broker.start()
        self._lag_task = asyncio.create_task(self._watch_lag())

    async def _watch_lag(self, interval: float = 15.0) -> None:
        """Keep the conformity_consumer_lag gauge current while the consumers run."""
        while True:
            for name, group in zip(self.names, self.groups(), strict=True):
                try:
                    lag = await asyncio.to_thread(group_lag, self.settings, group)
                except KafkaError:
                    continue  # the broker is away; the next round tries again
                metrics.CONSUMER_LAG.labels(name).set(lag)
            await asyncio.sleep(interval)

    def groups(self) -> list[str]:
        """The consumer group of each running reaction."""
        prefix = self.settings.kafka_consumer_group_prefix
        return [f"{prefix}.{name}" for name in self.names]

    async def drain(self, timeout: float) -> bool:
        """Wait until every group has committed everything on the topic; False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            try:
                lags = [
                    await asyncio.to_thread(group_lag, self.settings, g) for g in self.groups()
                ]
            except KafkaError as error:
                logger.warning("Cannot read consumer lag", extra={"error": type(error).__name__})
                return False
            if not any(lags):
                return True
            await asyncio.sleep(0.5)
        return False

    async def stop(self) -> None:
        """Leave the groups (committing nothing more) and close the database pool."""
        if self._lag_task is not None:
            self._lag_task.cancel()
        await self.broker.stop()
        for reaction in self._with_lifecycle():
            await reaction.stop()
        await self.engine.dispose()

    def _with_lifecycle(self) -> list[Lifecycle]:
        return [r for r in self.reactions if isinstance(r, Lifecycle)]


def build_consumers(settings: Settings, names: Sequence[str] | None = None) -> Consumers:
    """Consumers for `names` (by default every reaction whose settings are present)."""
    engine = create_async_engine(settings.sqlalchemy_url, pool_pre_ping=True)
    return Consumers(settings, list(names or default_reactions(settings)), engine)


async def run_until_stopped(
    stop: asyncio.Event,
    edge: Edge | None,
    consumers: Consumers | None,
    drain_timeout: float = 60.0,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Run until `stop` is set; then stop the edge, drain the consumers, and stop them.

    The edge stops first so nothing new arrives; the consumers then finish what is on the
    topic and commit before they leave their groups.
    """
    if consumers is not None:
        await consumers.start()
    try:
        if edge is not None:
            await edge.start()
        if on_ready is not None:
            on_ready(edge.port if edge is not None else 0)
        try:
            await stop.wait()
        finally:
            if edge is not None:
                await edge.stop()
        if consumers is not None and not await consumers.drain(drain_timeout):
            logger.warning("Stopped before the consumers caught up; they resume on restart")
    finally:
        if consumers is not None:
            await consumers.stop()
