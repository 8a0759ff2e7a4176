"""``/_localbatch/...``: inspect and steer a service running in another process (not Batch: neither
signed, throttled nor counted).

- ``GET /_localbatch/validation-failures`` -> ``{"failures": [...]}``; ``DELETE`` returns and clears them.
- ``PUT /_localbatch/pools/{poolId}`` with ``{"vmSize", "dedicated", "lowPriority", "state",
  "taskSlotsPerNode", "containerType"}`` (all optional): create or change a pool; fewer nodes
  requeue the tasks of the removed ones.
- ``POST /_localbatch/jobs/{jobId}/tasks/{taskId}/complete`` with ``{"exitCode": 3}``: a running
  task exits.
- ``POST /_localbatch/faults`` with ``{"operationId", "status", "code", "message", "times",
  "headers"}``: the next ``times`` calls of the operation get that error (``{"Retry-After": "2"}``).
- ``PATCH /_localbatch/knobs`` with ``{"requests_per_second", "burst", "throttling",
  "schedule_seconds", "prepare_seconds", "delete_seconds", "page_size"}``.
- ``POST /_localbatch/clock/advance`` with ``{"seconds": 30}``.
- ``POST /_localbatch/seed`` with ``{"example": "Pools_GetPool_Basic.json"}``.
- ``GET /_localbatch/stats`` -> calls per ``"<operationId> <status>"``, throttled count, task count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import LocalBatch

KNOBS = (
    "requests_per_second",
    "burst",
    "throttling",
    "schedule_seconds",
    "prepare_seconds",
    "delete_seconds",
    "page_size",
)


def _batch(request: web.Request) -> LocalBatch:
    from .server import BATCH_KEY

    return request.app[BATCH_KEY]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


async def get_failures(request: web.Request) -> web.Response:
    return web.json_response({"failures": list(_batch(request).validation_failures)})


async def take_failures(request: web.Request) -> web.Response:
    return web.json_response({"failures": _batch(request).take_validation_failures()})


async def put_pool(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        pool = _batch(request).set_pool(
            request.match_info["poolId"],
            vm_size=data.get("vmSize"),
            dedicated=None if data.get("dedicated") is None else int(data["dedicated"]),
            low_priority=None if data.get("lowPriority") is None else int(data["lowPriority"]),
            state=data.get("state"),
            task_slots_per_node=None
            if data.get("taskSlotsPerNode") is None
            else int(data["taskSlotsPerNode"]),
            container_type=data.get("containerType", "keep"),
        )
    except (TypeError, ValueError) as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    return web.json_response(
        {"id": pool.id, "dedicated": pool.dedicated, "lowPriority": pool.low_priority, "state": pool.state}
    )


async def complete_task(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        _batch(request).complete_task(
            request.match_info["jobId"], request.match_info["taskId"], int(data.get("exitCode", 0))
        )
    except KeyError as e:
        raise web.HTTPNotFound(text=str(e)) from None
    except ValueError as e:
        raise web.HTTPConflict(text=str(e)) from None
    return web.json_response({"completed": True})


async def add_fault(request: web.Request) -> web.Response:
    batch = _batch(request)
    data = await _json(request)
    try:
        batch.inject_fault(
            str(data["operationId"]),
            int(data["status"]),
            str(data["code"]),
            str(data.get("message", "Injected by the test.")),
            times=int(data.get("times", 1)),
            headers=data.get("headers"),
        )
    except KeyError as e:
        raise web.HTTPBadRequest(text=f"unknown or missing {e}") from None
    return web.json_response({"faults": len(batch.faults)})


async def patch_knobs(request: web.Request) -> web.Response:
    batch = _batch(request)
    data = await _json(request)
    unknown = set(data) - set(KNOBS)
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown knobs {sorted(unknown)}")
    for name, value in data.items():
        setattr(batch, name, type(getattr(batch, name))(value))
    return web.json_response({name: getattr(batch, name) for name in KNOBS})


async def advance_clock(request: web.Request) -> web.Response:
    batch = _batch(request)
    data = await _json(request)
    batch.clock.advance(float(data.get("seconds", 0)))
    return web.json_response({"now": batch.clock.now()})


async def seed(request: web.Request) -> web.Response:
    data = await _json(request)
    try:
        _batch(request).seed_example(str(data["example"]))
    except (KeyError, FileNotFoundError) as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    return web.json_response({"seeded": data["example"]})


async def stats(request: web.Request) -> web.Response:
    batch = _batch(request)
    return web.json_response(
        {"calls": dict(batch.calls), "throttled": batch.throttled, "tasks": len(batch.tasks)}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_localbatch/validation-failures", get_failures)
    app.router.add_delete("/_localbatch/validation-failures", take_failures)
    app.router.add_put("/_localbatch/pools/{poolId}", put_pool)
    app.router.add_post("/_localbatch/jobs/{jobId}/tasks/{taskId}/complete", complete_task)
    app.router.add_post("/_localbatch/faults", add_fault)
    app.router.add_patch("/_localbatch/knobs", patch_knobs)
    app.router.add_post("/_localbatch/clock/advance", advance_clock)
    app.router.add_post("/_localbatch/seed", seed)
    app.router.add_get("/_localbatch/stats", stats)
