"""The composition root: builds every component and owns the task tree. Nothing imports it
but the command line (and tests that run the daemon in-process)."""

from __future__ import annotations

import os
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from worker.assembly import Shared, build_poller
from worker.aws.budget import (
    TARGET_SERVICES,
    ConnectionPlan,
    open_descriptors,
    plan_connections,
    raise_descriptor_limit,
)
from worker.aws.clients import Clients
from worker.aws.errors import error_code, metric_code
from worker.discovery import discover
from worker.fleet import Coordinator
from worker.http import Health, HttpServer
from worker.loops import SharedLoops
from worker.metrics import Metrics
from worker.settings import QueueSettings, Settings

log = structlog.get_logger("worker.app")

STARTUP_RETRY_MAX_SECONDS = 60.0
# Queues start spread over up to this long (5 ms a queue), so N queues and a fleet of replicas
# restarted together do not resolve and poll in one burst.
STARTUP_SPREAD_PER_QUEUE_SECONDS = 0.005
STARTUP_SPREAD_MAX_SECONDS = 5.0


@dataclass
class Runtime:
    """What a running daemon exposes: its health view, what its queues share, its HTTP port."""

    health: Health
    shared: Shared = field(default_factory=Shared)
    http_port: int = 0
    queues: int = 0  # how many queues this process serves (sizes the start-up spread)
    taking_turns: bool = False


async def _start_queue(
    name: str,
    queue: QueueSettings,
    settings: Settings,
    runtime: Runtime,
    clients: Clients,
    metrics: Metrics,
) -> None:
    """Resolve the queue (retrying through an outage at boot), then poll it."""
    rng = runtime.shared.rng
    spread = min(STARTUP_SPREAD_MAX_SECONDS, STARTUP_SPREAD_PER_QUEUE_SECONDS * runtime.queues)
    await anyio.sleep(rng.uniform(0, spread))
    failures = 0
    while True:
        try:
            poller = await build_poller(name, queue, settings, clients, metrics, runtime.shared)
            break
        except Exception as exc:  # noqa: BLE001 - retried; readiness stays false meanwhile
            failures += 1
            delay = rng.uniform(0.5, 1.0) * min(STARTUP_RETRY_MAX_SECONDS, 2.0**failures)
            metrics.aws_errors.labels("sqs", "ResolveQueue", metric_code(error_code(exc))).inc()
            log.error(
                "queue_resolve_failed", queue=name, error=error_code(exc), retry_in=round(delay, 3)
            )
            await anyio.sleep(delay)
    poller.stop_when_gone = name not in settings.queues  # discovered: may be deleted
    runtime.health.pollers[name] = poller
    _warn_if_taking_turns(runtime)
    await poller.run()


def _warn_if_taking_turns(runtime: Runtime) -> None:
    polls = runtime.shared.polls
    slots = polls.total_tokens if polls is not None else None
    if slots is not None and len(runtime.health.pollers) > slots and not runtime.taking_turns:
        runtime.taking_turns = True
        log.warning(
            "queues_take_turns",
            queues=len(runtime.health.pollers),
            poll_slots=slots,
            hint="raise the open-files limit (RLIMIT_NOFILE) to poll every queue at once",
        )


def connection_plan(settings: Settings, limit: int, *, cost: int = 1) -> ConnectionPlan:
    kinds = {q.target.kind for q in settings.queues.values()}
    if settings.discovery is not None:
        kinds.add("auto")
    services = {s for kind in kinds for s in TARGET_SERVICES[kind]}
    if settings.coordination.backend == "dynamodb":
        services.add("dynamodb")  # loop counts run beside the deliveries
    plan = plan_connections(
        limit=limit,
        in_use=open_descriptors(),
        queues=len(settings.queues),
        deliveries=sum(q.concurrency for q in settings.queues.values()),
        services=services,
        wanted_floor=settings.aws.max_pool_connections,
        cost=cost,
    )
    log.info(
        "connections_planned",
        open_files_limit=plan.limit,
        budget=plan.budget,
        sqs_pool=plan.sqs_pool,
        target_pools=plan.target_pools,
        poll_slots=plan.poll_slots,
    )
    return plan


async def serve(
    settings: Settings,
    stop: anyio.Event,
    *,
    registry: CollectorRegistry | None = None,
    connection_cost: int = 1,
    task_status: TaskStatus[Runtime] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run every queue until `stop` is set, then shut down within the grace period.

    `connection_cost`: descriptors per AWS connection (more than 1 when the emulator runs in
    this process, as in the demo)."""
    registry = registry or CollectorRegistry()
    metrics = Metrics(registry)
    runtime = Runtime(Health(list(settings.queues)), queues=len(settings.queues))
    limit = raise_descriptor_limit()
    http = HttpServer(runtime.health, registry, settings.http.host, settings.http.port)
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        runtime.http_port = await tg.start(http.serve)
        plan = connection_plan(settings, limit, cost=connection_cost)
        runtime.shared.polls = anyio.CapacityLimiter(plan.poll_slots)
        clients = Clients(settings.aws, stack, pool=plan.pool_for, on_request=metrics.count_request)
        fleet = await _coordinate(settings, runtime, clients, metrics)
        if fleet is not None:
            tg.start_soon(fleet.run)
        starting = anyio.CancelScope()

        async def start_queue(name: str, queue: QueueSettings) -> None:
            await _start_queue(name, queue, settings, runtime, clients, metrics)

        async def start_all() -> None:
            with starting:
                async with anyio.create_task_group() as queues:
                    for name, queue in settings.queues.items():
                        queues.start_soon(start_queue, name, queue)
                    if settings.discovery is not None:
                        sqs = await clients.get("sqs")
                        queues.start_soon(
                            discover, settings, sqs, runtime.health, metrics, start_queue
                        )

        tg.start_soon(start_all)
        log.info("started", queues=len(settings.queues), poll_slots=plan.poll_slots)
        task_status.started(runtime)
        await stop.wait()
        await _shutdown(runtime.health, settings.shutdown.grace_seconds)
        if fleet is not None:
            await fleet.leave()
        starting.cancel()
        tg.cancel_scope.cancel()  # the HTTP server
    log.info("stopped")


async def _coordinate(
    settings: Settings, runtime: Runtime, clients: Clients, metrics: Metrics
) -> Coordinator | None:
    """With `coordination.backend: dynamodb`: join the fleet (one heartbeat, bounded) before
    any queue starts, so the first deliveries already use this replica's share."""
    coordination = settings.coordination
    if coordination.backend != "dynamodb":
        return None
    fleet = await Coordinator.open(coordination, clients, runtime.shared.guards, metrics)
    runtime.shared.fleet = fleet
    runtime.shared.loops = SharedLoops(fleet.table, fleet)
    runtime.health.sources.append(fleet.notes)
    await fleet.start()
    log.info(
        "coordination_joined",
        table=coordination.table,
        replica=fleet.me,
        members=fleet.members,
        degraded=fleet.degraded,
    )
    return fleet


async def _shutdown(health: Health, grace: float) -> None:
    health.stopping = True
    pollers = list(health.pollers.values())
    log.info("shutdown_started", grace_seconds=grace, queues=len(pollers))
    for poller in pollers:
        poller.stop_receiving()
    with anyio.move_on_after(grace):
        for poller in pollers:
            await poller.done.wait()
    late = [p for p in pollers if not p.done.is_set()]
    if late:
        log.warning("shutdown_grace_expired", queues=[p.name for p in late])
        for poller in late:
            poller.abort()
        for poller in late:
            await poller.done.wait()
    log.info("shutdown_drained")


async def watch_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not stop.is_set():
                log.info("signal_received", signal=signal.Signals(signum).name, action="drain")
                stop.set()
            else:
                # A second signal: leave now. Messages in flight reappear after their
                # visibility timeout; nothing is lost.
                log.warning("signal_received", signal=signal.Signals(signum).name, action="exit")
                os._exit(1)


async def run_daemon(settings: Settings, **kwargs: Any) -> None:
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals, stop)
        await serve(settings, stop, **kwargs)
        tg.cancel_scope.cancel()
