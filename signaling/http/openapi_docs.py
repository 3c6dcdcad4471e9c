"""docs/api.md, rendered from the OpenAPI document the app serves (a test keeps it current).

``python -m signaling.http.openapi_docs [docs/api.md]`` builds the app in a scratch data
directory, takes its document and writes the page.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

HEADER = """# HTTP API and webhooks

Generated from the OpenAPI 3.1 document every server serves at `/api/openapi.json` (itself
generated from the pydantic models the handlers use): do not edit by hand, run
`python -m signaling.http.openapi_docs`. docs/webhooks.md explains signatures and retries;
docs/frontdesk.md and docs/recordings.md explain what the calls do.
"""


def render(spec: dict[str, Any]) -> str:
    out = [HEADER, f"{spec['info']['description']}\n", "## Authorization\n"]
    for name, scheme in spec["components"]["securitySchemes"].items():
        out.append(f"- `{name}`: {scheme['description']}")
    out.append("\n## Operations\n")
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            out.append(f"### {method.upper()} `{path}`\n")
            out.append(f"{op['summary']}.")
            if op.get("description"):
                out.append(f"{op['description']}")
            out.append("")
            if op.get("security"):
                names = " or ".join(f"`{next(iter(s))}`" for s in op["security"])
                out.append(f"- Authorization: {names}")
            for p in op.get("parameters", []):
                out.append(f"- {p['in']} `{p['name']}`: {p.get('description', 'id')}")
            if "requestBody" in op:
                out.append(f"- Body: {_schema(op['requestBody']['content'])}")
            for status, answer in op["responses"].items():
                shape = _schema(answer.get("content", {}))
                if not shape.startswith("["):
                    shape += f": {answer['description']}"
                out.append(f"- {status}: {shape}")
            out.append("")
    out.append("## Webhooks\n")
    out.append("Each is a POST of the event as JSON, with these headers:\n")
    first = next(iter(spec["webhooks"].values()))["post"]
    for p in first["parameters"]:
        out.append(f"- `{p['name']}`: {p['description']}")
    out.append("")
    for name, hook in spec["webhooks"].items():
        post = hook["post"]
        out.append(f"- `{name}`: {post['summary']} ({_schema(post['requestBody']['content'])})")
    out.append("\n## Schemas\n")
    for name, schema in spec["components"]["schemas"].items():
        out.append(f"### {name}\n")
        if schema.get("description"):
            out.append(" ".join(schema["description"].split()) + "\n")
        if "properties" in schema:
            out.append("| Field | Type | Required | About |")
            out.append("| --- | --- | --- | --- |")
            required = set(schema.get("required", []))
            for field, prop in schema["properties"].items():
                about = " ".join(prop.get("description", "").split()).replace("|", "\\|")
                yes = "yes" if field in required else ""
                out.append(f"| `{field}` | {_type(prop)} | {yes} | {about} |")
        elif "enum" in schema:
            out.append("One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _ref(ref: str) -> str:
    name = ref.rsplit("/", 1)[-1]
    return f"[{name}](#{name.lower()})"


def _schema(content: dict[str, Any]) -> str:
    if not content:
        return "no body"
    media_type, body = next(iter(content.items()))
    schema = body.get("schema", {})
    if "$ref" in schema:
        return _ref(schema["$ref"])
    return f"`{media_type}`"


def _type(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return _ref(prop["$ref"])
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    kind = prop.get("type", "any")
    return f"{kind} ({prop['format']})" if "format" in prop else str(kind)


def _spec_of_a_scratch_app() -> dict[str, Any]:
    import json
    import secrets
    import tempfile

    from signaling.app import create_app
    from signaling.config import ServerConfig
    from signaling.http.openapi import routes

    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(ServerConfig(data_dir=Path(scratch), secret=secrets.token_bytes(32)))
        return json.loads(routes(app).document())


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/api.md")
    target.write_text(render(_spec_of_a_scratch_app()), encoding="utf-8")
