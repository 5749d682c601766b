"""Reports for people: headless matplotlib, figures as inline PNG, self-contained HTML pages."""

from __future__ import annotations

import base64
import html
import io


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (never a display); imported on demand."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 100) -> bytes:
    """A figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()


def img_tag(fig, dpi: int = 100, alt: str = "plot") -> str:
    """A figure as a self-contained HTML <img> (base64 PNG)."""
    data = base64.b64encode(png_bytes(fig, dpi)).decode()
    return f"<img alt='{alt}' src='data:image/png;base64,{data}'>"


_STYLE = (
    "body{font-family:sans-serif;margin:2em;max-width:1200px}"
    "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;text-align:right}"
    "td:nth-child(2),td:nth-child(3){text-align:left}img{max-width:100%}"
)


def page(title: str, body: str) -> str:
    """A self-contained HTML page around `body`."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
