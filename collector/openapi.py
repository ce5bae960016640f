"""The OpenAPI 3 document served at /openapi.json (filled in below)."""

from __future__ import annotations

from typing import Any


def build_openapi() -> dict[str, Any]:
    return {"openapi": "3.0.3", "info": {"title": "proxymeter collector", "version": "0.1.0"}, "paths": {}}
