"""Shared state: the metadata database, its per-subsystem schema tracks, the generation
counter that tells workers something changed, and worker heartbeats."""

from servion.state.database import Database, Step, Track, utcnow

__all__ = ["Database", "Step", "Track", "utcnow"]
