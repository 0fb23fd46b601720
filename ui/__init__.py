"""Web UI over the run store and the cluster: `engine ui` calls ui.app.main(argv)."""
from ui.app import create_app, main

__all__ = ["create_app", "main"]
