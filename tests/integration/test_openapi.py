"""/api/openapi.json: a valid OpenAPI 3.1 document of every route the app registers under /api,
generated from the models the handlers answer with (real answers validate against it), and
docs/api.md rendered from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import openapi_schema_validator
from openapi_spec_validator import validate

from rooms.roles import Role
from signaling.events import EVENT_TYPES
from signaling.http.openapi_docs import render
from tests.integration.conftest import Harness

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


async def _spec(harness: Harness) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{harness.base_url}/api/openapi.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assert r.headers["Cache-Control"] == "no-store"
            return await r.json()


def _answer_schema(spec: dict[str, Any], path: str, method: str, status: int) -> dict[str, Any]:
    content = spec["paths"][path][method]["responses"][str(status)]["content"]
    return {**content["application/json"]["schema"], "components": spec["components"]}


async def test_the_document_is_valid_openapi_and_lists_every_api_route(
    harness: Harness, consultation: str
) -> None:
    spec = await _spec(harness)
    validate(spec)
    assert spec["openapi"] == "3.1.0"

    registered = {
        (route.method, route.resource.canonical)
        for route in harness.http.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
    }
    described = {
        (method.upper(), path)
        for path, methods in spec["paths"].items()
        for method in methods
        if path.startswith("/api/")
    }
    assert registered == described
    assert len(registered) >= 20  # the recordings API, the front desk's, this document
    assert ("GET", "/healthz") in {(m.upper(), p) for p, ms in spec["paths"].items() for m in ms}
    assert set(spec["webhooks"]) == {e.model_fields["type"].default for e in EVENT_TYPES}

    # Real answers validate against what the document says of them.
    token = harness.token(consultation, Role.doctor)
    recordings = f"/api/consultations/{consultation}/recordings"
    async with aiohttp.ClientSession() as http:
        async with http.get(
            harness.base_url + recordings, headers={"Authorization": f"Bearer {token}"}
        ) as r:
            listing = await r.json()
        async with http.get(harness.base_url + "/healthz") as r:
            health = await r.json()
        async with http.get(harness.base_url + "/api/frontdesk/consultations") as r:
            assert r.status == 401
            refused = await r.json()
    template = "/api/consultations/{consultation}/recordings"
    openapi_schema_validator.validate(listing, _answer_schema(spec, template, "get", 200))
    openapi_schema_validator.validate(health, _answer_schema(spec, "/healthz", "get", 200))
    openapi_schema_validator.validate(
        refused, _answer_schema(spec, "/api/frontdesk/consultations", "get", 401)
    )


async def test_the_api_page_is_rendered_from_the_document(harness: Harness) -> None:
    assert DOC.read_text(encoding="utf-8") == render(await _spec(harness)), (
        "docs/api.md is out of date: python -m signaling.http.openapi_docs"
    )
