"""Health checks for a worker: with Flask if it is installed, else jobsync's own server.

    python examples/flask_health.py --node-name web-1 --dsn sqlite:///jobsync.db --port 8080

Flask is not a jobsync dependency.  If it is installed, this serves the
README's Flask routes from the worker's own app; if not, it starts
``jobsync.serve_health(job, port)``, the standard library server that any
worker can run (``Job(..., http_port=PORT)`` does the same), with
``/health/live``, ``/health/ready`` (503 with a JSON reason when not ready)
and ``/metrics`` (Prometheus).  Both bind 127.0.0.1 unless ``--host``.

The work loop runs on the main thread; SIGTERM drains the node and then
ends the process, whichever server is running.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

import jobsync
from jobsync import Job, Task

try:
    import flask  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # Flask is optional
    flask = None


def flask_app(job: Job) -> Any:
    app = flask.Flask(__name__)

    @app.route("/health/live")
    def live() -> object:
        status = job.get_coordination_status()
        ok = bool(status["coordinating"]) and status["state"] != "superseded"
        return flask.jsonify(status), 200 if ok else 503

    @app.route("/health/ready")
    def ready() -> object:
        status = job.get_coordination_status()
        return flask.jsonify(status), 200 if job.am_i_healthy() else 503

    @app.route("/stats")
    def stats() -> object:
        return flask.jsonify(job.statistics())

    return app


def serve(job: Job, host: str, port: int) -> str:
    """Start the health endpoint on a daemon thread; return its URL."""
    if flask is not None:
        app = flask_app(job)
        thread = threading.Thread(
            target=app.run,
            kwargs={"host": host, "port": port},
            daemon=True,
        )
        thread.start()
        return f"http://{host}:{port} (Flask)"
    server = jobsync.serve_health(job, port=port, host=host)
    return f"{server.url} (jobsync.serve_health, Flask not installed)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--site", default="production")
    parser.add_argument("--dsn", help="sqlite:///path or postgresql://... (default: SYNC_SQL_*)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()

    with Job(args.node_name, args.site, args.dsn or jobsync.config) as job:
        print(f"{job.name}: ready; health on {serve(job, args.host, args.port)}", flush=True)
        while not job.draining:
            batch = int(time.time())
            for i in range(50):
                task = Task(f"{batch}-{i}")
                if job.can_claim_task(task) and job.add_task(task):
                    pass  # process it
            job.write_audit()
            time.sleep(0.2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
