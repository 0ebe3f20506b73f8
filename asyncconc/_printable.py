"""Text from outside (a URL list, a server, the file system) made safe to show.

A name, URL or error text is printed as the characters it holds, never as
instructions to the terminal: a crafted list must not clear the screen,
move the cursor, recolour text or reorder it (bidirectional overrides, the
"Trojan Source" trick), and a line break inside a name must not start a new
line of output. :func:`printable` spells every such character as a Python
escape (``\\x1b``, ``\\n``, ``\\u202e``), the form ``repr`` uses, so the text
stays readable and the escape can be searched for. A raw byte that was not
UTF-8, kept as a lone surrogate by ``surrogateescape``, is shown as the byte
(``\\xff``). Everything else, including the backslash, is left as it is.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

# C0 and C1 controls and DEL; the bidirectional marks, embeddings, overrides
# and isolates (Unicode TR9); line and paragraph separators; surrogates.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte kept by surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character spelled as an escape.

    The result contains no character that a terminal acts on, and is
    unchanged by a second call; text without such characters is returned
    as it is.
    """
    return _UNSAFE.sub(_escape, text)
