"""`engine ui`: registered in setup.cfg as the entry point ``ui`` of the group
``many_as_one.commands``, so the engine's command line serves the UI without engine/
importing it."""
from ui.app import main

__all__ = ["register"]


def register(commands):
    commands.add("ui", main, help="serve the web UI: engine ui [--host H --port P --runs DIR --token T]")
