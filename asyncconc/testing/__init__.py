"""Test support: a loopback file server with faults, and a pytest plugin.

The plugin (``asyncconc.testing.pytest_plugin``) is registered through the
``pytest11`` entry point, so installing asyncconc gives every test suite the
``file_server`` and ``file_server_factory`` fixtures.

Names are imported on first use (PEP 562): aiohttp's server is loaded only
by code that serves.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from asyncconc.testing._content import pattern_bytes, pattern_chunks, pattern_sha256
    from asyncconc.testing._fileserver import (
        FileServer,
        RecordedRequest,
        ServedFile,
        serve_files,
    )
    from asyncconc.testing._threaded import serve_files_in_thread

__all__ = [
    "FileServer",
    "RecordedRequest",
    "ServedFile",
    "pattern_bytes",
    "pattern_chunks",
    "pattern_sha256",
    "serve_files",
    "serve_files_in_thread",
]

_MODULES = {"serve_files_in_thread": "_threaded"}


def __getattr__(name: str) -> _typing.Any:
    if name not in __all__:
        raise AttributeError(f"module 'asyncconc.testing' has no attribute {name!r}")
    module = _MODULES.get(name) or ("_content" if name.startswith("pattern_") else "_fileserver")
    value = getattr(_importlib.import_module(f"asyncconc.testing.{module}"), name)
    globals()[name] = value
    return value
