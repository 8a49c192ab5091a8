"""`python -m mnist_pipeline.stages STAGE`: the stages alone, as dvc.yaml runs them."""

import sys

from mnist_pipeline.core.command import main
from mnist_pipeline.stages import STAGES

sys.exit(main("python -m mnist_pipeline.stages", "The DVC stages of the MNIST pipeline, one command each.", STAGES))
