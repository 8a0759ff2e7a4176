"""``/_localarm/...``: inspect and steer a server running in another process (not ARM, not throttled).

- ``GET /_localarm/validation-failures`` -> ``{"failures": [...]}``; ``DELETE`` returns and clears them.
- ``GET /_localarm/knobs``; ``PATCH /_localarm/knobs`` with ``{"reads_per_second": 1, ...}``.
- ``POST /_localarm/clock/advance`` with ``{"seconds": 30}``.
- ``POST /_localarm/seed`` with ``{"example": "ContainerGroupsGet_Failed.json", "subscriptionId": ...,
  "resourceGroup": ..., "name": ..., "tags": {...}}`` (all but ``example`` optional).
- ``POST /_localarm/faults`` with ``{"operationId": ..., "status": 500, "code": ..., "message": ...,
  "times": 1}``.
- ``GET /_localarm/stats`` -> calls per ``"<operationId> <status>"``, throttled counts, group count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .server import LocalArm


def _arm(request: web.Request) -> LocalArm:
    from .server import ARM_KEY

    return request.app[ARM_KEY]


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="expected a JSON object") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return data


async def get_failures(request: web.Request) -> web.Response:
    return web.json_response({"failures": list(_arm(request).validation_failures)})


async def take_failures(request: web.Request) -> web.Response:
    return web.json_response({"failures": _arm(request).take_validation_failures()})


async def get_knobs(request: web.Request) -> web.Response:
    return web.json_response(_arm(request).knobs.as_dict())


async def patch_knobs(request: web.Request) -> web.Response:
    arm = _arm(request)
    changes = await _json(request)
    if "resource_groups" in changes and changes["resource_groups"] is not None:
        changes["resource_groups"] = {tuple(pair) for pair in changes["resource_groups"]}
    try:
        arm.knobs.update(**changes)
    except TypeError as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    return web.json_response(arm.knobs.as_dict())


async def advance_clock(request: web.Request) -> web.Response:
    arm = _arm(request)
    data = await _json(request)
    arm.clock.advance(float(data.get("seconds", 0)))
    return web.json_response({"now": arm.clock.now()})


async def seed(request: web.Request) -> web.Response:
    arm = _arm(request)
    data = await _json(request)
    try:
        rid = arm.seed_example(
            str(data["example"]),
            subscription_id=data.get("subscriptionId"),
            resource_group=data.get("resourceGroup"),
            name=data.get("name"),
            tags=data.get("tags"),
        )
    except (KeyError, ValueError, FileNotFoundError) as e:
        raise web.HTTPBadRequest(text=str(e)) from None
    return web.json_response({"id": rid})


async def add_fault(request: web.Request) -> web.Response:
    arm = _arm(request)
    data = await _json(request)
    try:
        arm.inject_fault(
            str(data["operationId"]),
            int(data["status"]),
            str(data["code"]),
            str(data.get("message", "Injected by the test.")),
            times=int(data.get("times", 1)),
            headers=data.get("headers"),
        )
    except KeyError as e:
        raise web.HTTPBadRequest(text=f"unknown or missing {e}") from None
    return web.json_response({"faults": len(arm.faults)})


async def stats(request: web.Request) -> web.Response:
    arm = _arm(request)
    return web.json_response(
        {"calls": dict(arm.calls), "throttled": dict(arm.throttler.throttled), "groups": len(arm.groups)}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_localarm/validation-failures", get_failures)
    app.router.add_delete("/_localarm/validation-failures", take_failures)
    app.router.add_get("/_localarm/knobs", get_knobs)
    app.router.add_patch("/_localarm/knobs", patch_knobs)
    app.router.add_post("/_localarm/clock/advance", advance_clock)
    app.router.add_post("/_localarm/seed", seed)
    app.router.add_post("/_localarm/faults", add_fault)
    app.router.add_get("/_localarm/stats", stats)
