"""The HTTP APIs described as OpenAPI 3.1, generated from the models the handlers use.

A route of an API is added to the app through ``ApiRoutes.add`` with its ``Operation``: the
method, path, the pydantic model of its body and of each answer, and how it is authorized.
The handler serializes with those same models, so the description cannot say one thing and
the code another, and nothing of it is written by hand. ``/api/openapi.json`` serves the
document built from what the app actually registered (a test compares the two); the
webhooks (signaling/events.py) are in it too, under OpenAPI 3.1's ``webhooks``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from signaling.events import EVENT_TYPES
from signaling.webhooks import signing

OPENAPI_PATH = "/api/openapi.json"
TITLE = "teleconsult"
VERSION = "0.1.0"
_REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Content:
    """An answer that is not a JSON model: a video, plain text."""

    media_type: str
    description: str
    binary: bool = False


Answer = type[BaseModel] | Content


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    required: bool = False


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    answers: Mapping[int, Answer]
    body: type[BaseModel] | None = None
    # Names of security schemes (SECURITY_SCHEMES), any one of which authorizes.
    security: tuple[str, ...] = ()
    query: tuple[Query, ...] = ()
    tag: str = "server"
    description: str = ""


SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "joinToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A join token of the consultation whose role may see recordings "
        "(doctor, expert). docs/tokens.md.",
    },
    "callToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The join token of someone in the consultation's call now (admitted, "
        "not removed). docs/tokens.md.",
    },
    "joinTokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same join token, for a <video> element that cannot send headers.",
    },
    "siteApiToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A site's API token (tcs_...): acts as that site's front desk.",
    },
    "terminalCredential": {
        "type": "apiKey",
        "in": "cookie",
        "name": "tc_terminal",
        "description": "A paired nursing-home terminal's device credential (HttpOnly, set "
        "when the terminal collects its pairing). docs/terminals.md.",
    },
    "staffSession": {
        "type": "apiKey",
        "in": "cookie",
        "name": "tc_staff",
        "description": "A logged-in staff member's session; every write also needs the "
        "session's X-CSRF-Token header.",
    },
}


@dataclass
class ApiRoutes:
    """The operations the app has registered, in order."""

    operations: list[Operation] = field(default_factory=list)
    _document: bytes | None = None

    def add(self, app: web.Application, operation: Operation, handler: Handler) -> None:
        app.router.add_route(operation.method, operation.path, handler)
        self.operations.append(operation)
        self._document = None

    def document(self) -> bytes:
        if self._document is None:
            self._document = json.dumps(describe(self.operations), indent=1).encode()
        return self._document


API_ROUTES: web.AppKey[ApiRoutes] = web.AppKey("api_routes", ApiRoutes)


def routes(app: web.Application) -> ApiRoutes:
    """The app's registry, made on first use."""
    if API_ROUTES not in app:
        app[API_ROUTES] = ApiRoutes()
    return app[API_ROUTES]


class OpenApiOut(BaseModel):
    """This document (an OpenAPI 3.1 object)."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


def setup(app: web.Application) -> None:
    routes(app).add(
        app,
        Operation(
            "GET",
            OPENAPI_PATH,
            "This description of the HTTP APIs and webhooks, as OpenAPI 3.1",
            {200: OpenApiOut},
        ),
        _serve_document,
    )


async def _serve_document(request: web.Request) -> web.Response:
    return web.Response(body=routes(request.app).document(), content_type="application/json")


# ------------------------------------------------------------------ the document


def describe(operations: Iterable[Operation]) -> dict[str, Any]:
    operations = list(operations)
    models: list[tuple[type[BaseModel], str]] = []
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        models += [(a, "serialization") for a in op.answers.values() if _is_model(a)]
    models += [(event, "serialization") for event in EVENT_TYPES]
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(_PATH_PARAM.sub(r"{\1}", op.path), {})[op.method.lower()] = _operation(
            op, refs
        )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "The HTTP APIs of a teleconsult server. Errors of the recordings "
            "API are plain text; the front desk's are {error, message}. Every answer "
            "under /api is Cache-Control: no-store.",
        },
        "paths": paths,
        "webhooks": {
            event.model_fields["type"].default: _webhook(event, refs) for event in EVENT_TYPES
        },
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _is_model(answer: Answer) -> bool:
    return isinstance(answer, type) and issubclass(answer, BaseModel)


def _operation(op: Operation, refs: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "summary": op.summary,
        "operationId": _operation_id(op),
        "tags": [op.tag],
        "responses": {
            str(status): _answer(answer, refs) for status, answer in sorted(op.answers.items())
        },
    }
    if op.description:
        out["description"] = op.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "description": q.description,
            "schema": {"type": "string"},
        }
        for q in op.query
    ]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.security:
        out["security"] = [{name: []} for name in op.security]
    return out


def _operation_id(op: Operation) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", f"{op.method}_{op.path}").strip("_")
    return words.lower()


def _answer(answer: Answer, refs: Mapping[Any, Any]) -> dict[str, Any]:
    if isinstance(answer, Content):
        schema: dict[str, Any] = {"type": "string"}
        if answer.binary:
            schema["contentMediaType"] = answer.media_type
        return {
            "description": answer.description,
            "content": {answer.media_type: {"schema": schema}},
        }
    return {
        "description": (answer.__doc__ or answer.__name__).strip().splitlines()[0],
        "content": {"application/json": {"schema": refs[(answer, "serialization")]}},
    }


_WEBHOOK_HEADERS = [
    (signing.TIMESTAMP, "Unix seconds when this attempt was signed; refuse it when more than "
     "5 minutes from your clock."),
    (signing.SIGNATURE, "v1=<hex HMAC-SHA256 of timestamp + '.' + the body, keyed with the "
     "endpoint's secret>."),
    (signing.EVENT_ID, "The event's id (also in the body): delivery is at least once, "
     "so drop an id already seen."),
    (signing.EVENT_TYPE, "The event's type (also in the body)."),
    (signing.AUDIT_HEAD, "<seq>:<mac> of the server's audit log when this attempt was sent."),
]  # fmt: skip


def _webhook(event: type[BaseModel], refs: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": (event.__doc__ or event.__name__).strip().splitlines()[0],
            "operationId": f"webhook_{event.model_fields['type'].default}",
            "tags": ["webhooks"],
            "parameters": [
                {
                    "name": name,
                    "in": "header",
                    "required": True,
                    "description": text,
                    "schema": {"type": "string"},
                }
                for name, text in _WEBHOOK_HEADERS
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": refs[(event, "serialization")]}},
            },
            "responses": {"2XX": {"description": "Taken. Anything else is tried again later."}},
        }
    }
