"""MNIST with DVC stages, Keras models and MLflow tracking."""
