import numpy as np
import pytest

from mnist_pipeline.data import idx


def test_encode_decode_round_trip():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    assert np.array_equal(idx.decode(idx.encode(images)), images)
    assert np.array_equal(idx.decode(idx.encode(labels)), labels)


def test_header_matches_the_mnist_layout():
    data = idx.encode(np.zeros((3, 28, 28), dtype=np.uint8))
    assert data[:4] == bytes([0, 0, 8, 3])
    assert data[4:16] == (3).to_bytes(4, "big") + (28).to_bytes(4, "big") + (28).to_bytes(4, "big")
    assert len(data) == 16 + 3 * 28 * 28


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x08\x03\x00\x00" + bytes(12), "not an unsigned-byte IDX file"),
        (bytes([0, 0, 0x0D, 1]) + (2).to_bytes(4, "big") + bytes(8), "not an unsigned-byte IDX file"),
        (bytes([0, 0, 8, 3]) + (1).to_bytes(4, "big"), "cut short"),
        (idx.encode(np.zeros((2, 4), dtype=np.uint8))[:-1], "header promises shape (2, 4)"),
        (idx.encode(np.zeros((2, 4), dtype=np.uint8)) + b"\x00", "but the file has 21"),
    ],
)
def test_decode_rejects_malformed_files(data, message):
    with pytest.raises(idx.IdxError, match=message.replace("(", r"\(").replace(")", r"\)")):
        idx.decode(data)


def test_encode_refuses_other_dtypes():
    with pytest.raises(idx.IdxError, match="uint8"):
        idx.encode(np.zeros(3, dtype=np.float32))


def test_verify_rejects_bytes_that_are_not_the_canonical_file():
    # A well-formed IDX file with the right shape but the wrong pixels.
    fake = idx.encode(np.zeros(10000, dtype=np.uint8))
    with pytest.raises(idx.IdxError, match=r"t10k-labels-idx1-ubyte: sha256 .* does not match"):
        idx.verify("t10k-labels-idx1-ubyte", fake)
