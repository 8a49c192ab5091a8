"""`mlflow run` on the MLproject: the train entry point gives a run shaped like `dvc repro`'s."""

from mlflow.projects import load_project

from tests.support.harness import REPO


def test_the_project_declares_its_entry_points_and_environment():
    project = load_project(REPO)
    assert set(project._entry_points) == {"main", "download", "preprocess", "train", "evaluate", "tune"}
    train = project.get_entry_point("train")
    assert train.parameters["model"].type == "string"
    command = train.compute_command({"model": "logistic", "epochs": "2"}, storage_dir=None)
    assert command == "python -m mnist_pipeline train logistic --evaluate --epochs 2"
    assert project.env_type == "python_env" and project.env_config_path.endswith("python_env.yaml")
