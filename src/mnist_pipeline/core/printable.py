"""Names as a terminal should show them: a file name can hold a newline or an escape code."""

import unicodedata


def printable(text: str) -> str:
    """`text` with every control or format character (Unicode category C*: newline, tab, ESC, DEL,
    C1 controls, bidi overrides, zero-width characters) written as a backslash escape (`\\n`, `\\x1b`,
    `\\u202e`), so a name cannot forge a line of output or restyle the terminal; everything else is
    unchanged."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch).startswith("C") else ch for ch in text
    )
