"""The HTTP face of the service: app factory, routes, metrics."""

from .app import create_app

__all__ = ["create_app"]
