"""Scoring a trained model on the test set: scikit-learn's scores, the report files and pictures
DVC declares, and the evaluation logged into the model's training run."""
