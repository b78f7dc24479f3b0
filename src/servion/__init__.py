"""servion: take trained models from a file to a fast, observable, versioned endpoint."""

from servion.config import Settings
from servion.errors import ServionError

__version__ = "0.1.0"

__all__ = ["ServionError", "Settings", "__version__"]
