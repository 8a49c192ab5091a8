"""Training a Keras model: the builders, the fit loop and its callbacks, the per-epoch metric sender,
and the train stage's tracked run (trainer)."""
