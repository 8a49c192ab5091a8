"""Text from outside (a run name, a param value, a file name) made safe to print: a newline or a
terminal escape code in it shows as `\\n` or `\\x1b`, so it cannot forge a line or colour the screen."""

import unicodedata


def printable(text: str) -> str:
    """`text` with every control or format character (Unicode category C*: newlines, tabs, ESC,
    DEL, C1 codes, bidi overrides, ...) written as its backslash escape; the rest unchanged."""
    return "".join(repr(char)[1:-1] if unicodedata.category(char)[0] == "C" else char for char in text)
