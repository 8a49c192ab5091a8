"""MNIST on disk: the IDX format and its checksums, the sources it comes from, and the splits the
preprocess stage writes and the train and evaluate stages read."""
