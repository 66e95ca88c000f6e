"""MkDocs hook: the API reference page, written from the app's own OpenAPI document at build time.

``docs/reference/api.md`` holds the marker ``<!-- openapi -->``; this hook replaces it with one section per
endpoint (summary, description, parameters, responses) from ``create_app(settings).openapi()``. Nothing is
fetched and no service is needed: building the app reads the charter and the registry files only.
``python docs/hooks/openapi.py`` prints the same Markdown.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
MARKER = "<!-- openapi -->"
PAGE = "reference/api.md"


def openapi() -> dict[str, Any]:
    """The OpenAPI document of the open-data API, as ``/openapi.json`` serves it."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from api.app import create_app
    from smartzone.settings import get_settings

    return create_app(get_settings()).openapi()


def _cell(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _type(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s, components) for s in schema["anyOf"])
    if "enum" in schema:
        return ", ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}), components)}"
    return str(kind)


def render(doc: dict[str, Any]) -> str:
    """Markdown for every path and method of an OpenAPI document, in the document's order."""
    components = doc.get("components", {})
    info = doc.get("info", {})
    out = [
        f"Generated from the OpenAPI document of *{info.get('title', '')}* version "
        f"`{info.get('version', '')}` (OpenAPI {doc.get('openapi', '')}).",
        "",
    ]
    for path, methods in doc.get("paths", {}).items():
        for method, op in methods.items():
            out += [f"## `{method.upper()} {path}`", ""]
            if op.get("summary"):
                out += [f"**{op['summary']}**", ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                out += [
                    "| parameter | in | required | type | default | description |",
                    "| --- | --- | --- | --- | --- | --- |",
                ]
                for p in params:
                    schema = p.get("schema", {})
                    default = schema.get("default")
                    out.append(
                        f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                        f"{_cell(_type(schema, components))} | "
                        f"{'' if default is None else _cell(f'`{default}`')} | "
                        f"{_cell(p.get('description') or schema.get('description'))} |"
                    )
                out.append("")
            responses = op.get("responses", {})
            if responses:
                out += ["| status | description | media types |", "| --- | --- | --- |"]
                for status, resp in responses.items():
                    media = ", ".join(f"`{m}`" for m in resp.get("content", {}))
                    out.append(f"| {status} | {_cell(resp.get('description'))} | {media} |")
                out.append("")
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri == PAGE and MARKER in markdown:
        return markdown.replace(MARKER, render(openapi()))
    return markdown


if __name__ == "__main__":
    print(render(openapi()))
