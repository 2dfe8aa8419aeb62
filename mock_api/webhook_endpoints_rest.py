"""``/v1/webhook_endpoints`` and ``/v1/webhook_event_types``: thin aiohttp handlers over the store.

Each handler authenticates, reads the body whole (:mod:`mock_api.rest_io`), asks the sans-I/O store
(:mod:`mock_api.webhook_endpoints`, the server's one instance) and journals the change on the server
timeline. ``/test`` is the only one that leaves the process: one signed attempt to the endpoint's URL,
whose HTTP status is the answer's ``status_code``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import errors, rest_io, wire_json
from . import journal_entries as je
from .config import RetryPolicy
from .server import SERVER_KEY, MockServer
from .webhook_endpoints import Endpoint, Refused, WebhookEndpointStore

PREFIX = "/v1"  # OpenAI's paths only: Azure documents no webhook endpoint API
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def store_of(server: MockServer) -> WebhookEndpointStore:
    """The server's webhook endpoints (one store per server, made on first use)."""
    return server.part(WebhookEndpointStore)


def _json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, dumps=wire_json.dumps)


def _refused(server: MockServer, op: str, refusal: Refused, endpoint_id: str | None = None) -> web.Response:
    server.journal.add(None, je.WebhookEndpointRefused(op=op, status=refusal.status, code=refusal.code,
                                                       param=refusal.param,
                                                       endpoint_id=je.ABSENT if endpoint_id is None else endpoint_id))
    return errors.rest_error(refusal.status, refusal.message, code=refusal.code, param=refusal.param)


def _guarded(op: str, handle: Callable[[web.Request, MockServer, WebhookEndpointStore], Awaitable[web.Response]],
             ) -> Handler:
    """Every route's front: the API key first (the real 401), then the handler."""

    async def route(request: web.Request) -> web.StreamResponse:
        server = request.app[SERVER_KEY]
        denied = server.authenticate(request)
        if denied is not None:
            return denied
        return await handle(request, server, store_of(server))

    route.__name__ = f"webhook_endpoints_{op}"
    return route


def _id(request: web.Request) -> str:
    return request.match_info["webhook_endpoint_id"]


async def _create(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    made = store.create(await rest_io.read_json(request, server), store.clock())
    if isinstance(made, Refused):
        return _refused(server, "create", made)
    server.journal.add(None, je.WebhookEndpointCreated(endpoint_id=made.id, name=made.name, url=made.url,
                                                       event_types=list(made.event_types),
                                                       signing_secret_hint=made.view()["signing_secret_hint"]))
    return _json(made.with_secret())


async def _list(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    page = store.page(request.query)
    if isinstance(page, Refused):
        return _refused(server, "list", page)
    return _json(page.view())


async def _retrieve(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    found = store.get(_id(request))
    return _refused(server, "retrieve", found, _id(request)) if isinstance(found, Refused) else _json(found.view())


async def _update(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    done = store.update(_id(request), await rest_io.read_json(request, server), store.clock())
    if isinstance(done, Refused):
        return _refused(server, "update", done, _id(request))
    e = done.endpoint
    server.journal.add(None, je.WebhookEndpointUpdated(endpoint_id=e.id, changed=list(done.changed), name=e.name,
                                                       url=e.url, event_types=list(e.event_types)))
    return _json(e.view())


async def _delete(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    gone = store.delete(_id(request))
    if isinstance(gone, Refused):
        return _refused(server, "delete", gone, _id(request))
    server.journal.add(None, je.WebhookEndpointDeleted(endpoint_id=gone.id))
    return _json({"id": gone.id, "object": "webhook_endpoint.deleted", "deleted": True})


async def _rotate(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    done = store.rotate(_id(request), await rest_io.read_json(request, server), store.clock())
    if isinstance(done, Refused):
        return _refused(server, "rotate_secret", done, _id(request))
    e: Endpoint = done.endpoint
    server.journal.add(None, je.WebhookEndpointSecretRotated(endpoint_id=e.id,
                                                             signing_secret_hint=e.view()["signing_secret_hint"],
                                                             old_secret_until=done.old_until))
    return _json(e.with_secret())


async def _test(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    plan = store.test(_id(request), await rest_io.read_json(request, server), store.clock())
    if isinstance(plan, Refused):
        return _refused(server, "test", plan, _id(request))
    target, event = plan.target, plan.event
    once = RetryPolicy(max_attempts=1, timeout_s=server.config.retry.timeout_s)  # a test is one attempt
    sent = await server.webhooks.deliver(None, target.url, target.secrets, event, once)
    server.journal.add(None, je.WebhookEndpointTested(endpoint_id=target.endpoint_id, event_type=event["type"],
                                                      webhook_id=sent.webhook_id, url=target.url, status=sent.status,
                                                      error=sent.error))
    if sent.status is None:  # no HTTP answer at all: there is no status to report (the real answer is unknown)
        return _refused(server, "test", Refused(
            400, f"The test delivery to '{target.url}' got no HTTP response ({sent.error}).",
            "webhook_endpoint_unreachable", None), target.endpoint_id)
    return _json({"object": "webhook_endpoint.test", "webhook_endpoint_id": target.endpoint_id,
                  "event_type": event["type"], "status_code": sent.status, "success": True})


async def _event_types(request: web.Request, server: MockServer, store: WebhookEndpointStore) -> web.Response:
    return _json({"object": "list", "data": store.event_types()})


def setup(app: web.Application) -> None:
    """Add the routes (create_app has stored the server under SERVER_KEY; its middlewares apply)."""
    base = PREFIX + "/webhook_endpoints"
    one = base + "/{webhook_endpoint_id}"
    app.router.add_post(base, _guarded("create", _create))
    app.router.add_get(base, _guarded("list", _list))
    app.router.add_get(one, _guarded("retrieve", _retrieve))
    app.router.add_post(one, _guarded("update", _update))
    app.router.add_delete(one, _guarded("delete", _delete))
    app.router.add_post(one + "/rotate_secret", _guarded("rotate_secret", _rotate))
    app.router.add_post(one + "/test", _guarded("test", _test))
    app.router.add_get(PREFIX + "/webhook_event_types", _guarded("event_types", _event_types))
