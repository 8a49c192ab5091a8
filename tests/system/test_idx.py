import numpy as np

from mnist_pipeline.data import idx


def test_verify_accepts_the_real_files(mnist_files):
    for name, data in mnist_files.items():
        idx.verify(name, data)
    assert idx.decode(mnist_files["train-images-idx3-ubyte"]).shape == (60000, 28, 28)
    labels = idx.decode(mnist_files["t10k-labels-idx1-ubyte"])
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
