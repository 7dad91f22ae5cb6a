"""The ASGI entry point uvicorn imports (one app per worker process)."""

from __future__ import annotations

from callbridge.web.app import create_app

app = create_app()
