"""The tune command: tune.yaml's schema, the Optuna side (the shared study, the values a trial draws),
the trials as MLflow runs, and --apply's edit of params.yaml. No stage imports it."""
