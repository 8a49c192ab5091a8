"""A diverging fit (NaN or infinite loss) stops by the end of the graph call in which it appears (every
models.STEPS_PER_EXECUTION batches), with one line naming the model, the epoch, the batch, the likely cause
and the fix; the run ends FAILED and no model is written."""

import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.training.fit_loop import StopOnDivergence
from tests.support.tiny import tiny_params


@pytest.mark.parametrize("loss", [float("nan"), float("inf")])
def test_a_loss_that_is_not_finite_stops_at_that_batch(loss):
    guard = StopOnDivergence("logistic", tiny_params(optimizer="adam", learning_rate=0.5).model("mlp"))
    guard.on_epoch_begin(6)
    guard.on_train_batch_end(2, {"loss": 2.3})  # finite: nothing happens
    with pytest.raises(
        PipelineError,
        match=f"^logistic diverged at epoch 7, by batch 4: the training loss is {loss}; the "
        r"learning rate \(0.5 with adam\) is likely too high: lower "
        "models.logistic.learning_rate and train again; no model was saved$",
    ):
        guard.on_train_batch_end(3, {"loss": loss})
