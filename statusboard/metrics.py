"""A status document (`poolctl status --json`) in the Prometheus text exposition format.

``exposition(document)`` is the one entry point: `poolctl metrics` passes it what
``statusboard.probe`` decided, and the supervisor's /metrics server the same
document for its own board. prometheus_client does the formatting (names, label
escaping, HELP/TYPE lines) through a custom collector on a private registry, so
nothing global is registered and no default process/GC metrics are mixed in.

prometheus_client is imported inside ``exposition`` only: `poolctl status`
imports ``statusboard`` and must not pay for it.

Metrics (every one labelled ``pool``; worker metrics also ``slot``):

    poolctl_supervisor_up                     1 only when the supervisor is verified live
    poolctl_pool_state{state}                 1 for the current state, 0 for the others
                                              (failed: supervisor live, every worker failed)
    poolctl_pool_source{source}               1 for where the figures came from: shm (live
                                              board), file (runtime.json's last flush), none
    poolctl_pool_info{target}                 1, carries the worker target
    poolctl_workers_desired                   workers the pool should run
    poolctl_workers_healthy                   workers running with a fresh heartbeat
    poolctl_supervisor_uptime_seconds         only while live
    poolctl_worker_up                         1 when the worker is healthy
    poolctl_worker_state{state}               1 for the worker's state, 0 for the others
    poolctl_worker_heartbeat_age_seconds      absent before the first beat
    poolctl_worker_beats_total                this worker process's beats
    poolctl_worker_restarts_total             restarts of the slot
    poolctl_worker_recycled_total             planned replacements (max-rss / max-age)
    poolctl_worker_tasks_done_total           tasks (task pool) or task_done(ok=True) calls
    poolctl_worker_tasks_failed_total
    poolctl_worker_resident_memory_bytes      absent when not sampled

With ``source`` file the worker figures are the last flush's, not live ones.
"""

from __future__ import annotations

from statusboard.states import WorkerState

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, TypeGuard

    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric

POOL_STATES = ("running", "degraded", "failed", "stale", "stopped", "stop_failed", "unknown")
SOURCES = ("shm", "file", "none")
WORKER_STATES = tuple(s.label for s in WorkerState if s is not WorkerState.EMPTY)


def exposition(document: dict[str, Any]) -> bytes:
    """The Prometheus text format (version 0.0.4) for one status document."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_DocumentCollector(document))
    return generate_latest(registry)


class _DocumentCollector:
    """A prometheus_client custom collector: families made fresh from one document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def collect(self) -> Iterator[Metric]:
        """Every family with at least one sample (a pool with no workers has no worker families)."""
        return (family for family in self._families() if family.samples)

    def _families(self) -> Iterator[Metric]:
        doc = self.document
        pool = str(doc.get("pool") or "")
        supervisor = doc.get("supervisor") or {}
        workers = [w for w in doc.get("workers") or [] if isinstance(w, dict)]
        state = str(doc.get("state") or "unknown")
        source = str(doc.get("source") or "none")

        family = _gauge("supervisor_up", "1 when the supervisor is verified live (lock, pid and heartbeat).")
        family.add_metric([pool], 1.0 if supervisor.get("alive") is True else 0.0)
        yield family

        family = _gauge(
            "pool_state", "The pool's state as `poolctl status` decides it: 1 for the current one.", "state"
        )
        for label in _with(POOL_STATES, state):
            family.add_metric([pool, label], 1.0 if label == state else 0.0)
        yield family

        family = _gauge(
            "pool_source",
            "Where the figures come from: shm (the live board), file (runtime.json's last flush), none.",
            "source",
        )
        for label in _with(SOURCES, source):
            family.add_metric([pool, label], 1.0 if label == source else 0.0)
        yield family

        if doc.get("target") is not None:
            family = _gauge("pool_info", "Always 1; the labels describe the pool.", "target")
            family.add_metric([pool, str(doc["target"])], 1.0)
            yield family

        if isinstance(doc.get("workers_desired"), int):
            family = _gauge("workers_desired", "Workers the pool should run.")
            family.add_metric([pool], float(doc["workers_desired"]))
            yield family

        family = _gauge("workers_healthy", "Workers running with a fresh heartbeat.")
        family.add_metric([pool], float(sum(1 for w in workers if w.get("healthy") is True)))
        yield family

        uptime = supervisor.get("uptime_s")
        if _number(uptime):
            family = _gauge("supervisor_uptime_seconds", "Seconds since the live supervisor started.")
            family.add_metric([pool], float(uptime))
            yield family

        yield from _worker_families(pool, workers)


_WORKER_GAUGES = (
    ("heartbeat_age_s", "worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat."),
    ("rss_bytes", "worker_resident_memory_bytes", "The worker's resident memory (sampled from /proc)."),
)
_WORKER_COUNTERS = (
    ("beats", "worker_beats", "Heartbeats of the worker's current process."),
    ("restarts", "worker_restarts", "Times the slot's worker was restarted after exiting or hanging."),
    ("recycled", "worker_recycled", "Planned replacements of the slot's worker (max-rss, max-age)."),
    ("tasks_done", "worker_tasks_done", "Tasks the worker completed."),
    ("tasks_failed", "worker_tasks_failed", "Tasks the worker failed."),
)


def _worker_families(pool: str, workers: list[dict[str, Any]]) -> Iterator[Metric]:
    slots = [(w, [pool, str(w.get("slot"))]) for w in workers]

    family = _gauge("worker_up", "1 when the worker is running with a fresh heartbeat.", "slot")
    for w, key in slots:
        family.add_metric(key, 1.0 if w.get("healthy") is True else 0.0)
    yield family

    family = _gauge("worker_state", "The worker's state: 1 for the current one.", "slot", "state")
    for w, key in slots:
        current = str(w.get("state"))
        for label in _with(WORKER_STATES, current):
            family.add_metric([*key, label], 1.0 if label == current else 0.0)
    yield family

    for field, name, help_text in _WORKER_GAUGES:
        family = _gauge(name, help_text, "slot")
        for w, key in slots:
            if _number(w.get(field)):
                family.add_metric(key, float(w[field]))
        yield family

    for field, name, help_text in _WORKER_COUNTERS:
        counter = _counter(name, help_text, "slot")
        for w, key in slots:
            if _number(w.get(field)):
                counter.add_metric(key, float(w[field]))
        yield counter


def _gauge(name: str, help_text: str, *labels: str) -> GaugeMetricFamily:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(f"poolctl_{name}", help_text, labels=["pool", *labels])


def _counter(name: str, help_text: str, *labels: str) -> CounterMetricFamily:
    """``name`` without ``_total``: prometheus_client appends it to the sample."""
    from prometheus_client.core import CounterMetricFamily

    return CounterMetricFamily(f"poolctl_{name}", help_text, labels=["pool", *labels])


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _with(known: tuple[str, ...], current: str) -> tuple[str, ...]:
    """The known labels, plus the current one if it is new (an unknown(N) state, say)."""
    return known if current in known else (*known, current)
