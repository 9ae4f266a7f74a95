"""The page of an exported replay (:mod:`.export`): a Jinja2 template with its styles and its
script inlined, and the data as JSON. Nothing in it refers to anything outside the file; its
content security policy forbids the browser to load anything at all."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ..errors import ConfigError

__all__ = ["render_html"]

TEMPLATE = "replay.html.j2"


def _asset(name: str) -> str:
    return resources.files("steptrace.views").joinpath("templates", name).read_text("utf-8")


#: Data longer than this (bytes of JSON) goes in gzip-compressed, about five times smaller.
COMPRESS_ABOVE = 100_000


def _payload(data: Mapping[str, Any]) -> tuple[str, str]:
    """The data for the page's script element and its encoding: JSON safe inside a script
    (``<``, ``>``, ``&`` escaped), or for long windows, that JSON gzip-compressed in base64."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if len(text.encode()) <= COMPRESS_ABOVE:
        safe = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return safe, "json"
    packed = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    return base64.b64encode(packed).decode("ascii"), "gzip+base64"


def render_html(data: Mapping[str, Any]) -> str:
    """The whole page for :func:`~steptrace.views.export.replay_data`'s ``data``."""
    try:
        import jinja2
        from markupsafe import Markup
    except ImportError:  # pragma: no cover - Jinja2 comes with the dashboard's Altair
        raise ConfigError(
            "the HTML export needs Jinja2: pip install 'steptrace[dashboard]' (or jinja2)"
        ) from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("steptrace.views", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    runs = data["runs"]
    title = (
        f"{runs[0]['name']} · steptrace replay"
        if data["mode"] == "replay"
        else f"Compare {', '.join(r['name'] for r in runs)} · steptrace"
    )
    payload, encoding = _payload(data)
    page: str = env.get_template(TEMPLATE).render(
        data=data,
        payload=Markup(payload),
        encoding=encoding,
        runs=runs,
        title=title,
        css=Markup(_asset("replay.css")),
        script=Markup(_asset("replay.js")),
    )
    return page
