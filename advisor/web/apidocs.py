"""The API viewer at /schema: the OpenAPI document rendered on the server as one plain page.

Litestar's own viewers (Swagger, Redoc, Scalar…) load their scripts from a CDN and show a
blank page offline, which is where this service often runs; this one needs nothing but the
schema and the page's own stylesheet. The raw document stays at /schema/openapi.json.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.openapi.plugins import OpenAPIRenderPlugin

METHODS = ("get", "post", "put", "patch", "delete")


def _schema_name(schema: dict[str, Any] | None) -> str:
    """A short name for a request or response schema: its $ref's last part, or its type."""
    if not schema:
        return ""
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"list of {_schema_name(schema.get('items')) or 'values'}"
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return " or ".join(filter(None, (_schema_name(s) for s in schema[key])))
    return str(schema.get("type", ""))


def operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Every operation of the document, in its order, with what a reader needs."""
    out = []
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if not op:
                continue
            body = op.get("requestBody", {}).get("content", {})
            out.append({
                "method": method.upper(), "path": path, "tag": (op.get("tags") or ["other"])[0],
                "summary": op.get("summary", ""), "description": op.get("description", ""),
                "id": op.get("operationId", f"{method}{path}"),
                "params": [{"name": p.get("name"), "in": p.get("in"),
                            "required": p.get("required", False),
                            "type": _schema_name(p.get("schema"))}
                           for p in op.get("parameters", [])],
                "body": ", ".join(f"{media}: {_schema_name(c.get('schema'))}" for media, c in body.items()),
                "responses": [(code, r.get("description", ""))
                              for code, r in op.get("responses", {}).items()],
            })
    return out


class OfflineRenderPlugin(OpenAPIRenderPlugin):
    def __init__(self, path: str = "/") -> None:
        super().__init__(path=path)

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        template = request.app.template_engine.get_template("api.html")  # type: ignore[union-attr]
        info = openapi_schema.get("info", {})
        html: str = template.render(title=info.get("title", "API"), version=info.get("version", ""),
                               operations=operations(openapi_schema),
                               schemas=sorted(openapi_schema.get("components", {}).get("schemas", {})),
                                    json_url=self.get_openapi_json_route(request))
        return html.encode()
