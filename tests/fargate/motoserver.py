"""moto's server (the real third-party AWS emulator) as the tests' backend, with a driver.

``python -m tests.fargate.motoserver --port 0`` serves moto's own WSGI application (what
``moto_server`` runs) on a free loopback port and prints ``moto listening on http://HOST:PORT``.

moto is used as it is, except for what it cannot produce and the tests must drive, each through
an explicit ``/_driver/`` call (never behind the provider's back):

- ``POST /_driver/ecs/exit`` ``{"task", "exitCode", "reason", "stopCode", "stoppedReason"}``: the
  task's container exits as on ECS (container STOPPED with the exit code, task STOPPED, desired
  STOPPED). moto's containers never exit on their own: nothing runs in them.
- ``POST /_driver/ecs/state`` ``{"task", "lastStatus"}``: the task's lastStatus set (PENDING,
  PROVISIONING...: states moto's model has commented out).
- ``POST /_driver/throttle`` ``{"operation", "count"}``: the next ``count`` requests of an ECS
  operation (``RunTask``) answer HTTP 400 ThrottlingException "Rate exceeded", AWS's wire format.
- ``GET /_driver/calls``: requests served, by operation (``ecs.RunTask``...), for the figures.

Two corrections make moto's ECS tasks behave like ECS's, both stated here and applied at start-up:
tasks stay RUNNING until stopped (moto's state manager otherwise advances a task one state per
DescribeTasks, to STOPPED in four reads, with desiredStatus still RUNNING: set to its ``manual``
progression through moto's own state-manager API), and a task's containers report RUNNING while the
task runs and STOPPED once it stopped (moto reports them PENDING for ever).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_api import state_manager
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
_lock = threading.Lock()
calls: collections.Counter[str] = collections.Counter()
throttles: collections.Counter[str] = collections.Counter()
pinned: dict[str, str] = {}  # task ARN -> lastStatus set by the driver


def _tasks() -> Iterable[Any]:
    for region_backends in get_backend("ecs")[DEFAULT_ACCOUNT_ID].values():
        for cluster_tasks in region_backends.tasks.values():
            yield from cluster_tasks.values()


def _task(arn: str) -> Any:
    for task in _tasks():
        if task.task_arn == arn or arn.endswith(task.id):
            return task
    raise KeyError(arn)


def _follow_tasks() -> None:
    """Containers report their task's state (moto leaves them PENDING)."""
    for task in _tasks():
        if task.task_arn in pinned:
            task.status = pinned[task.task_arn]
        for container in task.containers:
            if getattr(container, "driven", False):
                continue
            if task.last_status == "RUNNING":
                container.last_status = "RUNNING"
            elif task.last_status == "STOPPED":
                container.last_status = "STOPPED"


def _operation(environ: Environ) -> str:
    target = str(environ.get("HTTP_X_AMZ_TARGET") or "")
    if "." in target:
        service, _, action = target.partition(".")
        prefix = {
            "AmazonEC2ContainerServiceV20141113": "ecs",
            "Logs_20140328": "logs",
            "secretsmanager": "secretsmanager",
        }
        return f"{prefix.get(service, service)}.{action}"
    return f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"


def _json(start_response: StartResponse, status: str, body: Any) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))]
    )
    return [data]


def _drive(path: str, body: dict[str, Any]) -> Any:
    if path == "/_driver/ecs/exit":
        task = _task(body["task"])
        container = task.containers[0]
        container.driven = True
        container.last_status = "STOPPED"
        container.exitCode = int(body.get("exitCode", 0))
        container.reason = body.get("reason")
        task.status = "STOPPED"
        task.desired_status = "STOPPED"
        task.stop_code = body.get("stopCode", "EssentialContainerExited")
        task.stopped_reason = body.get("stoppedReason", "Essential container in task exited")
        pinned.pop(task.task_arn, None)
        return {"task": task.task_arn}
    if path == "/_driver/ecs/state":
        task = _task(body["task"])
        pinned[task.task_arn] = body["lastStatus"]
        task.status = body["lastStatus"]
        return {"task": task.task_arn}
    if path == "/_driver/throttle":
        throttles[body["operation"]] += int(body.get("count", 1))
        return dict(throttles)
    if path == "/_driver/calls":
        return dict(calls)
    raise KeyError(path)


class Driven:
    """moto's WSGI application with the driver routes and the corrections above."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "")
        if path.startswith("/_driver/"):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            with _lock:
                try:
                    return _json(start_response, "200 OK", _drive(path, json.loads(raw or b"{}")))
                except KeyError as exc:
                    return _json(start_response, "404 Not Found", {"error": str(exc)})
        operation = _operation(environ)
        # One request at a time: moto's backends are plain dicts, not thread-safe (concurrent RunTasks
        # broke iterations with "dictionary changed size", a 500 after the task was made).
        with _lock:
            calls[operation] += 1
            action = operation.partition(".")[2]
            if throttles[action] > 0:
                throttles[action] -= 1
                return _json(
                    start_response,
                    "400 Bad Request",
                    {"__type": "ThrottlingException", "message": "Rate exceeded"},
                )
            _follow_tasks()
            result = list(self.app(environ, start_response))
            _follow_tasks()
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10**9})
    app = Driven(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"moto listening on http://{args.host}:{server.server_port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    sys.exit(0)


if __name__ == "__main__":
    main()
