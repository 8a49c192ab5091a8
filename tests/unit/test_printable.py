"""`printable`: names shown so that a newline, an escape code or a bidi override shows as such."""

import pytest

from mnist_pipeline.core.printable import printable

ESCAPED = [
    ("ok\nfake.png  9  1.0000.png", r"ok\nfake.png  9  1.0000.png"),  # a forged row of predict's output
    ("a\rb\tc", r"a\rb\tc"),
    ("\x1b[2J\x1b[31mred", r"\x1b[2J\x1b[31mred"),  # clear the screen, then red
    ("del\x7f", r"del\x7f"),
    ("c1\x85\x9b", r"c1\x85\x9b"),  # NEL and CSI, the C1 controls
    ("gnp.\u202eexe", r"gnp.\u202eexe"),  # a right-to-left override: shows as exe.png
    ("zero\u200bwidth\ufeff", r"zero\u200bwidth\ufeff"),
    ("bad\udcffbyte", r"bad\udcffbyte"),  # an undecodable byte of a file name (surrogateescape)
]


@pytest.mark.parametrize(("text", "shown"), ESCAPED, ids=[s for _, s in ESCAPED])
def test_control_and_format_characters_show_as_escapes(text, shown):
    assert printable(text) == shown
    assert printable(text).isprintable()


UNCHANGED = ["digit7.png", "data/batch.npy[3]", "été 日本 ×–…", r"C:\new\x1b", " spaced  out ", ""]


@pytest.mark.parametrize("text", UNCHANGED)
def test_everything_else_is_unchanged(text):
    assert printable(text) == text
