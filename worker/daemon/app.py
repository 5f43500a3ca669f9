"""The composition root: builds every component and owns the task tree. Nothing imports it
but the command line (and tests that run the daemon in-process)."""

from __future__ import annotations

import gc
import os
import signal
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from anyio.abc import TaskStatus
from prometheus_client import CollectorRegistry

from worker.aws.clients import Clients
from worker.aws.descriptors import (
    TARGET_SERVICES,
    ConnectionPlan,
    open_descriptors,
    plan_connections,
    raise_descriptor_limit,
)
from worker.aws.errors import error_code, metric_code
from worker.core.policy import failure_pause
from worker.daemon.assembly import Shared, Unresolved, build_poller, keeper_lease
from worker.daemon.discovery import discover_all
from worker.daemon.health import Health
from worker.daemon.http import HttpServer
from worker.fleet.guards import Guards
from worker.fleet.loops import SharedLoops
from worker.keeper.keepers import Keepers
from worker.metrics import Metrics
from worker.notify import Notifier, open_notifier
from worker.settings import QueueSettings, Settings

log = structlog.get_logger("worker.daemon.app")

STARTUP_RETRY_MAX_SECONDS = 60.0
# Queues start spread over up to this long (5 ms a queue), so N queues and a fleet of replicas
# restarted together do not resolve and poll in one burst.
STARTUP_SPREAD_PER_QUEUE_SECONDS = 0.005
STARTUP_SPREAD_MAX_SECONDS = 5.0


@dataclass
class Runtime:
    """What a running daemon exposes: its health view, what its queues share, its HTTP port."""

    health: Health
    shared: Shared
    http_port: int
    taking_turns: bool = False
    notifier: Notifier | None = None


async def _start_queue(
    name: str,
    queue: QueueSettings,
    settings: Settings,
    runtime: Runtime,
    clients: Clients,
    metrics: Metrics,
) -> None:
    """Resolve the queue (retrying through an outage at boot), then poll it — unless shutdown
    has begun meanwhile: a queue that was not polling when it began never starts (it is not
    among the pollers the shutdown drains, and would be cancelled with messages in flight)."""
    rng = runtime.shared.rng
    spread = STARTUP_SPREAD_PER_QUEUE_SECONDS * len(runtime.health.queues)
    await anyio.sleep(rng.uniform(0, min(STARTUP_SPREAD_MAX_SECONDS, spread)))
    discovered = name not in settings.queues  # may be deleted while served
    failures = 0
    while not runtime.health.stopping:
        try:
            poller = await build_poller(
                name,
                queue,
                settings,
                clients,
                metrics,
                runtime.shared,
                stop_when_gone=discovered,
            )
            runtime.health.unresolved.pop(name, None)
            if failures:
                metrics.queue_missing.labels(name).set(0)
            break
        except Exception as exc:  # noqa: BLE001 - retried; readiness stays false meanwhile
            failures += 1
            delay = failure_pause(failures, 2.0, STARTUP_RETRY_MAX_SECONDS, rng)
            code = exc.code if isinstance(exc, Unresolved) else error_code(exc)
            metrics.aws_errors.labels("sqs", "ResolveQueue", metric_code(code)).inc()
            missing = isinstance(exc, Unresolved) and exc.missing
            metrics.queue_missing.labels(name).set(1 if missing else 0)
            said = str(exc) if isinstance(exc, Unresolved) else code
            runtime.health.unresolved[name] = (
                f"not started: {said} (tried {'once' if failures == 1 else f'{failures} times'}, "
                f"again in {delay:.0f} s)"
            )
            log.error(
                "queue_resolve_failed",
                queue=name,
                error=code,
                problem=said,
                retry_in=round(delay, 3),
            )
            await anyio.sleep(delay)
    else:
        return  # shutdown began while resolving
    if runtime.health.stopping:
        log.info("queue_not_started", queue=name, reason="shutdown")
        return
    runtime.health.pollers[name] = poller
    _warn_if_taking_turns(runtime)
    if len(runtime.health.pollers) == len(settings.queues):
        # Every configured queue is built: what exists now (botocore's service models, the
        # clients, the queues' state) lives as long as the process. Frozen, the collector no
        # longer walks it on every full collection (measured: most of the collector's time on
        # a busy queue, 8 % of its CPU).
        gc.freeze()
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
    limit = raise_descriptor_limit()
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        plan = connection_plan(settings, limit, cost=connection_cost)
        clients = Clients(
            settings.aws,
            stack,
            pool=plan.pool_for,
            on_request=metrics.count_request,
            accounts=settings.accounts,
            on_account=metrics.account_state,
        )
        # With coordination, the coordinator joins the fleet (one bounded heartbeat) before
        # any queue starts, so the first deliveries already use this replica's share.
        guards = await Guards.open(settings.coordination, clients, metrics)
        fleet = guards.fleet
        polls = anyio.CapacityLimiter(plan.poll_slots)
        if fleet is None:
            shared = Shared(guards, polls=polls)
        else:
            shared = Shared(guards, SharedLoops(fleet.table, fleet), polls=polls)
        keepers = Keepers(settings.keeper, metrics, tg, lease_for=keeper_lease(settings, fleet))
        notifier = await open_notifier(settings.notify, clients, metrics, stack)
        told = anyio.Event()  # set once the queues are drained: the last digests go out
        if notifier is not None:
            shared.notices = notifier
            tg.start_soon(notifier.run, told)
        shared.on_parking = keepers.start
        sources = [clients.account_notes, *([fleet.notes] if fleet else [])]
        health = Health(list(settings.queues), sources=sources)
        http = HttpServer(health, registry, settings.http.host, settings.http.port)
        runtime = Runtime(health, shared, await tg.start(http.serve), notifier=notifier)
        async with AsyncExitStack() as membership:
            if fleet is not None:
                await membership.enter_async_context(fleet.taking_part())
                log.info(
                    "coordination_joined",
                    table=settings.coordination.table,
                    replica=fleet.me,
                    members=fleet.members,
                    degraded=fleet.degraded,
                )
            starting = anyio.CancelScope()

            async def start_queue(name: str, queue: QueueSettings) -> None:
                await _start_queue(name, queue, settings, runtime, clients, metrics)

            async def start_all() -> None:
                with starting:
                    async with anyio.create_task_group() as queues:
                        for name, queue in settings.queues.items():
                            queues.start_soon(start_queue, name, queue)
                        if settings.discovery is not None:
                            found = (settings, clients, health, metrics, start_queue)
                            queues.start_soon(discover_all, *found)

            tg.start_soon(start_all)
            log.info("started", queues=len(settings.queues), poll_slots=plan.poll_slots)
            task_status.started(runtime)
            await stop.wait()
            await _shutdown(health, settings.shutdown.grace_seconds)
            told.set()
            if notifier is not None:
                await notifier.finished.wait()  # within its FLUSH_SECONDS
        starting.cancel()
        tg.cancel_scope.cancel()  # the HTTP server (and whatever the notifier has not sent)
    log.info("stopped")


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
