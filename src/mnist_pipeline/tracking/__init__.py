"""MLflow plumbing, by concern: the store and the experiment, what a run records, the run file that
ties a model folder to its run, liveness (no run left RUNNING), and the registry's champion."""
