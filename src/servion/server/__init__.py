"""The REST server: ASGI app, worker processes, health, graceful shutdown."""

from servion.server.supervisor import check_bind_safety, is_loopback, serve

__all__ = ["check_bind_safety", "is_loopback", "serve"]
