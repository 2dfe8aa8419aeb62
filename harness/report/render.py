"""The Jinja2 environment the HTML reports are rendered with.

Templates live in ``harness/report/templates`` and ship as package data, so an installed rtsip
renders without the source tree. Autoescape is on for every template: a value from a run (a
transcript, an app's output line, a header) can never become markup; only what the report's
own code draws (SVG) is passed in as ``Markup``.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined


@cache
def environment() -> Environment:
    """One environment per process: templates are compiled once and reused for every report."""
    return Environment(
        loader=PackageLoader("harness.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt field fails the render instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)
