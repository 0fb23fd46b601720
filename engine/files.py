"""Files the engine writes: where its cache lives, and replacing a file so that a reader sees
the old one or the whole new one, never half of it."""
from __future__ import annotations

import os

__all__ = ["cache_dir", "atomic_write"]


def cache_dir() -> str:
    root = os.environ.get("ENGINE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "many-as-one")
    os.makedirs(root, exist_ok=True)
    return root


def _fsync_dir(directory: str):
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path, data: bytes | str | None = None, *, writer=None, sync_folder: bool = False) -> str:
    """Replace ``path`` with ``data`` (bytes, or str written as UTF-8), or with what
    ``writer(temp_path)`` writes: written beside ``path`` as ``<path>.tmp-<pid>``, fsynced,
    renamed into place (and the folder fsynced when ``sync_folder``, so the rename itself
    survives a power cut). On any error the temporary file is removed and the error
    propagates; ``path`` is then as it was. Returns ``path``."""
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        if writer is None:
            with open(tmp, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
        else:
            writer(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if sync_folder:
            _fsync_dir(os.path.dirname(path))
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return path
