"""Health and metrics over HTTP for one worker: ``/health/live``, ``/health/ready``, ``/metrics``.

Stdlib only: ``http.server`` on one daemon thread, bound to 127.0.0.1 unless
told otherwise.  ``jobsync.serve_health(job, port)`` starts it by hand;
``Job(..., http_port=PORT)`` starts it when the Job enters (before the node
is ready, so probes can watch it join) and stops it when the Job has left.

What each endpoint answers (docs/USAGE_GUIDE.md, "Health"):

- ``/health/live``: 200 while the coordination thread runs and no newer
  process took this node's name; else 503.  A database outage does not make
  a worker un-live (restarting it would not help); it makes it un-ready.
- ``/health/ready``: 200 while ``job.am_i_healthy()`` (live, not draining,
  holding what the latest plan gives it, lease valid); else 503.  Both carry
  a JSON body; a 503 says why (``reason``, ``state``, ``waiting_for``).
- A worker an operator drained (planned maintenance, ``jobsync drain``)
  stays live and ready; both bodies then carry ``"maintenance"``:
  ``"draining"`` while it still holds tokens, ``"drained"`` at zero.
- ``/metrics``: the Prometheus text format (0.0.4): the node's gauges
  (tokens owned, leader, generation, heartbeat age, state, open claims,
  capacity, drained) and
  every counter of ``job.statistics()`` as ``jobsync_*_total``, with
  ``jobsync_metrics_errors_total`` (scrapes that could not read the history).

Every endpoint answers ``HEAD`` as it answers ``GET``, without the body.

A scrape reads the Job's in-memory state: no database round trip, except
that the leader reads the latest rebalance record once per new generation
(one short statement) to report unowned tokens and its last plan.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from jobsync.core.errors import InvalidArgument, JobSyncError
from jobsync.core.lifecycle import NodeState

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from jobsync.runtime.job import Job

log = logging.getLogger("jobsync.health")

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"
CONTENT_TYPE_JSON = "application/json"

COUNTERS: Mapping[str, str] = {
    "claims": "Tasks this node claimed (add_task answered True).",
    "claims_refused": "Claims the database refused (another worker holds or finished the task).",
    "claim_errors": "Claims that failed on a transient backend error (answered False).",
    "completions": "Tasks this node recorded as done.",
    "completions_refused": "Completions refused because the claim was no longer held.",
    "completions_queued": "Completions queued for retry after a transient backend error.",
    "completions_resent": "Completions recorded again after the database lost history.",
    "releases": "Claims given back (failed tasks, exits by an exception).",
    "heartbeats": "Heartbeats the database answered.",
    "heartbeat_failures": "Heartbeats that failed on a transient backend error.",
    "transient_errors": "Transient backend errors met by the coordination thread.",
    "plans_committed": "Plans this node committed as leader that moved tokens.",
    "plan_conflicts": "Plans that lost a compare-and-set race and were re-planned.",
    "acks": "Token releases this node acknowledged (hand-offs away from it).",
    "reregistrations": "Times this node's lease expired or it was evicted and it registered anew.",
    "evictions": "Nodes this node evicted as leader for not acknowledging a release.",
    "callback_calls": "on_rebalance calls.",
    "callback_errors": "on_rebalance calls that raised.",
}


class HealthServer:
    """A running health endpoint; ``close()`` stops it.  Use ``.port`` when started on port 0."""

    def __init__(self, job: Job, port: int = 0, host: str = "127.0.0.1") -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgument(f"port must be a TCP port (0 picks a free one), got {port!r}")
        if not isinstance(host, str) or not host:
            raise InvalidArgument(f"host must be a non-empty string, got {host!r}")
        server_class = _server_class(":" in host)
        try:
            self._httpd = server_class((host, port), job, _Probe(job))
        except OSError as exc:
            raise InvalidArgument(f"cannot serve health on {host}:{port}: {exc}") from exc
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._closed = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"jobsync-health-{job.name}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> HealthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<HealthServer {self.url}>"


def serve_health(job: Job, port: int = 0, host: str = "127.0.0.1") -> HealthServer:
    """Serve ``/health/live``, ``/health/ready`` and ``/metrics`` for ``job`` on a daemon thread.

    Binds ``host`` (127.0.0.1 by default: pass ``"0.0.0.0"`` for probes from
    outside the host) and ``port`` (0 picks a free one: read ``.port``).
    Raises InvalidArgument if the address cannot be bound.
    """
    return HealthServer(job, port=port, host=host)


# -- the answers ----------------------------------------------------------------
def liveness(job: Job) -> tuple[bool, dict[str, object]]:
    """(live, JSON body) for ``/health/live``."""
    status = job.get_coordination_status()
    state = status["state"]
    body: dict[str, object] = {"node": job.name, "site": job.site, "state": state}
    if job.maintenance is not None:  # "draining" or "drained": live all the same
        body["maintenance"] = job.maintenance
    if state == "standalone":  # coordination disabled: live while entered
        live = job.am_i_healthy()
        reason = None if live else "the Job is not entered"
    elif state == NodeState.SUPERSEDED.value:
        live, reason = False, "superseded: a newer process took this node's name"
    elif not status["coordinating"]:
        live = False
        reason = "the coordination thread is not running"
        if status["error"]:
            reason += f": {status['error']}"
    else:
        live, reason = True, None
    body["live"] = live
    if reason is not None:
        body["reason"] = reason
    return live, body


def readiness(job: Job) -> tuple[bool, dict[str, object]]:
    """(ready, JSON body) for ``/health/ready``."""
    ready = job.am_i_healthy()
    status = job.get_coordination_status()
    body: dict[str, object] = {
        "node": job.name,
        "site": job.site,
        "ready": ready,
        "state": status["state"],
        "tokens": status["tokens"],
        "leader": status["leader"],
    }
    if job.maintenance is not None:  # a drained worker is ready: it holds what the plan gives
        body["maintenance"] = job.maintenance
    if status["hot_tokens"]:  # the leader names the tokens measured hot
        body["hot_tokens"] = status["hot_tokens"]
    if not ready:
        body["reason"] = _not_ready_reason(job, status)
        body["waiting_for"] = status["waiting_for"]
    return ready, body


def _not_ready_reason(job: Job, status: Mapping[str, object]) -> str:
    state = status["state"]
    if state == "standalone":
        return "the Job is not entered"
    if state == NodeState.SUPERSEDED.value:
        return "superseded: a newer process took this node's name"
    if status["draining"] or state in (NodeState.DRAINING.value, NodeState.STOPPED.value):
        return f"draining (state {state}): handing tokens off before the process ends"
    if not status["coordinating"]:
        error = status["error"]
        return "the coordination thread is not running" + (f": {error}" if error else "")
    if state != NodeState.ACTIVE.value:
        return f"state {state}: waiting for {status['waiting_for']}"
    age = status["heartbeat_age_sec"]
    seen = f"{age:.1f} s ago" if isinstance(age, float) else "not yet"
    return f"lease expired: last heartbeat answered {seen}"


class _Probe:
    """The leader's view of the latest rebalance, read once per generation."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._generation: object = None
        self._values: dict[str, float | int] = {}
        self.errors = 0

    def leader_values(self, status: Mapping[str, object]) -> dict[str, float | int]:
        if not status["leader"]:
            return {}
        with self._lock:
            generation = status["generation"]
            if generation != self._generation:
                try:
                    self._values = self._read()
                    self._generation = generation
                except JobSyncError as exc:
                    self.errors += 1
                    log.warning("node %s: metrics could not read history: %s", self._job.name, exc)
                    return {}
            return self._values

    def _read(self) -> dict[str, float | int]:
        backend = self._job._backend
        if backend is None:
            return {}
        records = backend.read_history(self._job.site, limit=1)
        if not records:
            return {"unowned_tokens": 0}
        entry = records[0].entry
        return {
            "unowned_tokens": entry.unowned,
            "last_plan_moved_tokens": entry.moved,
            "last_plan_duration_seconds": entry.duration_ms / 1e3,
            "last_plan_timestamp_seconds": records[0].at,
        }


_GAUGES: Mapping[str, str] = {
    "live": "1 while the coordination thread runs and the node was not superseded.",
    "ready": "1 while the node is live, not draining, and holds what the latest plan gives it.",
    "leader": "1 if this node is the site's leader (the oldest live node).",
    "draining": "1 once the node stopped claiming to hand its tokens off.",
    "tokens_owned": "Tokens this node may claim tasks of now (its claimable set).",
    "generation": "The site's plan generation as this node last saw it.",
    "token_version": "Changes of this node's claimable set since it started.",
    "open_claims": "Tasks claimed by this node and not yet completed or released.",
    "heartbeat_age_seconds": "Seconds since the database last answered this node's heartbeat.",
    "heartbeat_interval_seconds": "Configured heartbeat interval.",
    "heartbeat_timeout_seconds": "Configured heartbeat timeout (the lease).",
    "total_tokens": "The site's number of tokens.",
    "capacity": "This node's capacity: its share of tokens is proportional to it.",
    "drained": "1 while an operator's drain (planned maintenance) keeps this node at zero tokens.",
    "unowned_tokens": "Leader only: tokens the latest plan left unowned (unsatisfiable pins).",
    "last_plan_moved_tokens": "Leader only: tokens the latest committed plan moved.",
    "last_plan_duration_seconds": "Leader only: time the latest committed plan took to compute.",
    "last_plan_timestamp_seconds": "Leader only: when the latest plan committed (Unix time).",
}


def render_metrics(job: Job, probe: _Probe | None = None) -> str:
    """The Prometheus text exposition of ``job``'s state and counters."""
    status = job.get_coordination_status()
    live, _ = liveness(job)
    cfg = job.config
    labels = {"site": job.site, "node": job.name}
    out = _Exposition(labels)
    gauges: dict[str, object] = {
        "live": live,
        "ready": job.am_i_healthy(),
        "leader": status["leader"],
        "draining": status["draining"],
        "tokens_owned": status["tokens"],
        "generation": status["generation"],
        "token_version": status["token_version"],
        "open_claims": status["open_claims"],
        "heartbeat_age_seconds": status["heartbeat_age_sec"],
        "heartbeat_interval_seconds": cfg.heartbeat_interval_sec,
        "heartbeat_timeout_seconds": cfg.heartbeat_timeout_sec,
        "total_tokens": cfg.total_tokens,
        "capacity": job.capacity,
        "drained": job.maintenance is not None,
    }
    if probe is not None:
        gauges.update(probe.leader_values(status))
    for name, value in gauges.items():
        out.sample(f"jobsync_{name}", "gauge", _GAUGES[name], value)
    if probe is not None:
        out.sample(
            "jobsync_metrics_errors_total",
            "counter",
            "Scrapes that could not read the rebalance history.",
            probe.errors,
        )
    out.family("jobsync_node_state", "gauge", "1 for the node's current lifecycle state.")
    for state in [s.value for s in NodeState]:
        out.value("jobsync_node_state", state == status["state"], {"state": state})
    _counters(out, job.statistics())
    return out.text()


def _counters(out: _Exposition, stats: Mapping[str, int]) -> None:
    # Job.statistics() prefixes the backend's own counters with "backend_"; the
    # node's counters never use that prefix.
    def from_backend(key: str) -> bool:
        return key.startswith("backend_") and key not in COUNTERS

    verbs = {k.removeprefix("backend_"): v for k, v in stats.items() if from_backend(k)}
    for key, value in stats.items():
        if from_backend(key):
            continue
        name = "jobsync_" + re.sub(r"[^a-zA-Z0-9_]", "_", key) + "_total"
        help_text = COUNTERS.get(key, f"The {key!r} counter of Job.statistics().")
        out.sample(name, "counter", help_text, value)
    if "round_trips" in verbs:
        out.sample(
            "jobsync_backend_round_trips_total",
            "counter",
            "Round trips to the database by this node's backend handle.",
            verbs.pop("round_trips"),
        )
    if verbs:
        out.family("jobsync_backend_calls_total", "counter", "Backend verb calls, by verb.")
        for verb, value in sorted(verbs.items()):
            out.value("jobsync_backend_calls_total", value, {"verb": verb})


class _Exposition:
    """Builds the text format: HELP and TYPE once per family, then samples."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def value(self, name: str, value: object, extra: Mapping[str, str] | None = None) -> None:
        labels = {**self._labels, **(extra or {})}
        text = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
        self._lines.append(f"{name}{{{text}}} {_number(value)}")

    def sample(self, name: str, kind: str, help_text: str, value: object) -> None:
        if value is None:
            return
        self.family(name, kind, help_text)
        self.value(name, value)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _number(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            repr(value)
            if math.isfinite(value)
            else {"inf": "+Inf", "-inf": "-Inf"}.get(repr(value), "NaN")
        )
    raise TypeError(f"metric value must be a number, got {value!r}")


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


# -- the HTTP plumbing -------------------------------------------------------------
def respond(job: Job, probe: _Probe | None, target: str) -> tuple[int, str, str]:
    """(status, content type, body) for a GET of ``target``."""
    path = target.split("?", 1)[0].rstrip("/") or "/"
    if path == "/health/live":
        ok, body = liveness(job)
        return 200 if ok else 503, CONTENT_TYPE_JSON, _dump(body)
    if path == "/health/ready":
        ok, body = readiness(job)
        return 200 if ok else 503, CONTENT_TYPE_JSON, _dump(body)
    if path == "/metrics":
        return 200, CONTENT_TYPE_METRICS, render_metrics(job, probe)
    if path == "/":
        return (
            200,
            CONTENT_TYPE_JSON,
            _dump({"endpoints": ["/health/live", "/health/ready", "/metrics"]}),
        )
    return 404, CONTENT_TYPE_JSON, _dump({"error": f"no such endpoint: {path}"})


def _dump(body: Mapping[str, object]) -> str:
    return json.dumps(body, sort_keys=True) + "\n"


@functools.cache
def _server_class(ipv6: bool) -> Callable[[tuple[str, int], Job, _Probe], ThreadingHTTPServer]:
    """The server class, built on first use so that ``import jobsync`` skips http.server."""
    import socket
    from http.server import ThreadingHTTPServer

    from jobsync.http_reply import GetHandler

    class Handler(GetHandler):
        server_version = "jobsync-health"

        def answer(self, send_body: bool) -> None:
            server: Any = self.server
            try:
                code, kind, text = respond(server.job, server.probe, self.path)
            except Exception as exc:  # a bug must not kill the server thread; report it
                log.exception("health endpoint %s failed", self.path)
                code, kind, text = 500, CONTENT_TYPE_JSON, _dump({"error": repr(exc)})
            self.reply(code, text.encode("utf-8"), kind, send_body, {"Cache-Control": "no-store"})

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("health %s: " + format, self.address_string(), *args)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ipv6 else socket.AF_INET

        def __init__(self, address: tuple[str, int], job: Job, probe: _Probe) -> None:
            self.job, self.probe = job, probe
            super().__init__(address, Handler)

    return Server
