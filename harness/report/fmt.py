"""Small text helpers shared by the run report's parts (page, ladder, waveform)."""

from __future__ import annotations

import html
import json
from typing import Any


def esc(value: Any) -> str:
    """Escape for markup the drawing code writes itself (SVG); templates escape on their own."""
    return html.escape(str(value), quote=True)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def short(value: Any, limit: int = 160) -> str:
    """One line of at most ``limit`` characters: table cells and ladder labels must not wrap."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fit(text: str, px: float, char_px: float = 6.4) -> str:
    """Cut ``text`` to what fits in ``px`` pixels of SVG text (estimated by character count)."""
    n = max(4, int(px / char_px))
    return text if len(text) <= n else text[: n - 1] + "…"


def sec(ms: float) -> str:
    return f"{ms / 1000:.3f}"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
