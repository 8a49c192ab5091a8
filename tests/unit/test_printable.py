"""`printable`: text from outside shown so that no character in it acts on the terminal."""

import unicodedata

from mnist_pipeline.tools.printable import printable


def test_control_and_format_characters_show_as_escapes_and_the_rest_is_unchanged():
    assert printable("mlp-evil\n   1  mlp\x1b[31m") == "mlp-evil\\n   1  mlp\\x1b[31m"
    assert printable("a\rb\tc\x00\x7f\x85\x9b") == "a\\rb\\tc\\x00\\x7f\\x85\\x9b"  # C0, DEL, C1 (NEL, CSI)
    assert printable("abc\u202egnp.exe\u200b") == "abc\\u202egnp.exe\\u200b"  # a bidi override, a zero width space
    assert printable("\U000e0041\ud800\ue000") == "\\U000e0041\\ud800\\ue000"  # a tag, a lone surrogate, private use
    plain = "run-1 é 中文 ü '\"\\ | 0.5 ½ \u00a0"
    assert printable(plain) == plain
    every = "".join(map(chr, range(0x110000)))
    shown = printable(every)
    assert all(unicodedata.category(char)[0] != "C" for char in shown)
