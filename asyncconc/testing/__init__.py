"""Test support: a loopback file server with faults, and a pytest plugin.

The plugin (``asyncconc.testing.pytest_plugin``) is registered through the
``pytest11`` entry point, so installing asyncconc gives every test suite the
``file_server`` fixture.
"""

from asyncconc.testing._content import pattern_bytes, pattern_chunks, pattern_sha256
from asyncconc.testing._fileserver import FileServer, RecordedRequest, ServedFile, serve_files

__all__ = [
    "FileServer",
    "RecordedRequest",
    "ServedFile",
    "pattern_bytes",
    "pattern_chunks",
    "pattern_sha256",
    "serve_files",
]
