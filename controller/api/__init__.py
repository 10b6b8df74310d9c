"""HTTP API of the controller (FastAPI); see controller/README.md for the endpoint list."""

from controller.api.app import create_app

__all__ = ["create_app"]
