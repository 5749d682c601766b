"""Matplotlib for reports: headless, and figures turned into inline PNG for HTML pages."""

from __future__ import annotations

import base64
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
