import subprocess
import sys

import pytest
import yaml

from mnist_pipeline.config import LogisticParams, MLPParams, load_params
from mnist_pipeline.errors import ParamsError

from conftest import REPO


@pytest.fixture
def defaults() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path, params) -> str:
    path = tmp_path / "params.yaml"
    path.write_text(params if isinstance(params, str) else yaml.safe_dump(params))
    return path


def test_the_shipped_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params.models["logistic"], LogisticParams)
    assert isinstance(params.models["mlp"], MLPParams)
    assert [s.kind for s in params.download.sources][-1] == "pypi"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p["models"]["mlp"].update(dropout=1.0), "models.mlp.dropout = 1.0: Input should be less than 1"),
        (lambda p: p["models"]["mlp"].update(dropout=-0.1), "models.mlp.dropout = -0.1"),
        (lambda p: p["models"]["mlp"].update(epochs=0), "models.mlp.epochs = 0: Input should be greater than or equal to 1"),
        (lambda p: p["models"]["mlp"].update(batch_size=-8), "models.mlp.batch_size = -8"),
        (lambda p: p["models"]["logistic"].update(learning_rate=0), "models.logistic.learning_rate = 0: Input should be greater than 0"),
        (lambda p: p["models"]["mlp"].update(epochs="ten"), "models.mlp.epochs = 'ten': Input should be a valid integer"),
        (lambda p: p["models"]["mlp"].update(hidden_units=[]), "models.mlp.hidden_units = []"),
        (lambda p: p["models"]["mlp"].update(optimizer="adom"), "models.mlp.optimizer = 'adom': Input should be 'adam', 'adamw', 'sgd' or 'rmsprop'"),
        (lambda p: p["models"]["mlp"].update(activation="relux"), "models.mlp.activation = 'relux': Input should be"),
        (lambda p: p["models"]["mlp"].update(type="cnn"), "models.mlp.type = 'cnn' is not allowed; allowed: 'logistic', 'mlp'"),
        (lambda p: p["models"]["mlp"].update(dropuot=0.2), "unknown key 'models.mlp.dropuot'; allowed here: "),
        (lambda p: p["data"].update(shuffle=True), "unknown key 'data.shuffle'; allowed here: validation_size, train_size, seed"),
        (lambda p: p.pop("mlflow"), "missing key 'mlflow'"),
        (lambda p: p["models"]["logistic"].pop("epochs"), "missing key 'models.logistic.epochs'"),
        (lambda p: p.update(models={}), "models = {}: Dictionary should have at least 1 item"),
        (lambda p: p["download"]["sources"][0].update(kind="ftp"), "download.sources.0.kind = 'ftp' is not allowed"),
        (lambda p: p["download"]["sources"][1].update(url="ftp://x"), "download.sources.1.url = 'ftp://x'"),
    ],
)
def test_bad_values_name_the_key_the_value_and_what_is_allowed(tmp_path, defaults, change, expected):
    change(defaults)
    with pytest.raises(ParamsError) as error:
        load_params(write(tmp_path, defaults))
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML at line 3"):
        load_params(write(tmp_path, "data:\n  seed: [1, 2\nmodels: {}\n"))


def test_a_file_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(write(tmp_path, "- just\n- a list\n"))


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ParamsError, match="no such file; run from the repository root"):
        load_params(tmp_path / "params.yaml")


def test_cli_exits_2_with_one_line_and_never_loads_tensorflow(tmp_path, defaults):
    defaults["models"]["mlp"]["dropout"] = 1.5
    params = write(tmp_path, defaults)
    probe = (
        "import sys; from mnist_pipeline.cli import main; code = main(sys.argv[1:]);"
        "print('tensorflow' in sys.modules, 'mlflow' in sys.modules); sys.exit(code)"
    )
    done = subprocess.run([sys.executable, "-c", probe, "--params", str(params), "train", "mlp"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout.strip() == "False False"
    assert done.stderr.strip().splitlines() == [f"error: {params}: models.mlp.dropout = 1.5: Input should be less than 1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_cli_rejects_a_model_that_params_yaml_does_not_define(tmp_path, defaults):
    params = write(tmp_path, defaults)
    done = subprocess.run([sys.executable, "-m", "mnist_pipeline", "--params", str(params), "train", "cnn"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown model 'cnn': params.yaml defines logistic, mlp" in done.stderr


def test_overrides_are_validated_like_params_yaml(defaults, tmp_path):
    from mnist_pipeline.config import override_model

    params = load_params(write(tmp_path, defaults))
    changed = override_model(params, "mlp", {"epochs": "2", "hidden_units": "[64, 32]", "learning-rate": "1e-2"})
    assert (changed.models["mlp"].epochs, changed.models["mlp"].hidden_units) == (2, [64, 32])
    assert changed.models["mlp"].learning_rate == 0.01 and changed.models["logistic"] == params.models["logistic"]
    with pytest.raises(ParamsError, match=r"override: models.mlp.epochs = 'ten': Input should be a valid integer"):
        override_model(params, "mlp", {"epochs": "ten"})
    with pytest.raises(ParamsError, match=r"unknown key 'models.mlp.epoch'"):
        override_model(params, "mlp", {"epoch": "2"})
    with pytest.raises(ParamsError, match=r"unknown model 'cnn'"):
        override_model(params, "cnn", {"epochs": "2"})


def test_registry_section_is_validated(defaults, tmp_path):
    defaults["registry"]["min_accuracy"] = 1.5
    with pytest.raises(ParamsError, match=r"registry.min_accuracy = 1.5: Input should be less than or equal to 1"):
        load_params(write(tmp_path, defaults))
