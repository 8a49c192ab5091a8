import re
import subprocess
import sys
from functools import reduce

import pytest
import yaml

from mnist_pipeline.config import LogisticParams, MLPParams, load_params
from mnist_pipeline.errors import ParamsError

from conftest import REPO, make_repo, repo_env, sh, small_params, stages_run


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
        # A misspelt key: unknown, and the key it stands for missing; one problem, named once.
        (lambda p: p["models"]["mlp"].update(dropuot=p["models"]["mlp"].pop("dropout")),
         "unknown key 'models.mlp.dropuot'; did you mean 'dropout'?"),
        (lambda p: p.update(mlfow=p.pop("mlflow")), "unknown key 'mlfow'; did you mean 'mlflow'?"),
        (lambda p: p["download"]["sources"][0].update(pth=p["download"]["sources"][0].pop("path")),
         "unknown key 'download.sources.0.pth'; did you mean 'path'?"),
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
    assert "\n" not in message and "more: fix this one" not in message


def test_a_misspelt_key_with_other_problems_still_counts_them(tmp_path, defaults):
    defaults["models"]["mlp"]["epoch"] = defaults["models"]["mlp"].pop("epochs")
    defaults["models"]["mlp"]["dropout"] = 2
    with pytest.raises(ParamsError, match=r": unknown key 'models.mlp.epoch'; did you mean 'epochs'\? "
                                          r"\(\+1 more: fix this one and run again\)$"):
        load_params(write(tmp_path, defaults))


def readme_errors() -> list[str]:
    """Every params.yaml error line README.md quotes."""
    return re.findall(r"^error: params\.yaml: .*$", (REPO / "README.md").read_text(), flags=re.MULTILINE)


def params_that_give(error: str) -> dict:
    """The shipped params.yaml with the one change the quoted error names."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if found := re.fullmatch(r"error: params\.yaml: unknown key '([\w.]+)'; did you mean '(\w+)'\?", error):
        *path, typo = found[1].split(".")
        parent = reduce(lambda node, key: node[key], path, params)
        parent[typo] = parent.pop(found[2])
    elif found := re.fullmatch(r"error: params\.yaml: ([\w.]+) = (.+?)(: .*| is not allowed; .*)", error):
        *path, key = found[1].split(".")
        reduce(lambda node, key: node[key], path, params)[key] = yaml.safe_load(found[2])
    else:
        raise AssertionError(f"README.md quotes an error this test cannot reproduce: {error}")
    return params


def test_every_params_error_the_readme_quotes_is_what_check_params_prints(tmp_path):
    quoted = readme_errors()
    assert len(quoted) >= 3
    for error in quoted:
        write(tmp_path, params_that_give(error))
        done = subprocess.run([sys.executable, "-m", "mnist_pipeline", "check-params"], cwd=tmp_path,
                              capture_output=True, text=True, env=repo_env(REPO))
        assert (done.returncode, done.stderr) == (2, error + "\n")


def readme_session(command: str) -> list[str]:
    """The output README.md shows under `$ command`, up to the end of its code block."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(f"$ {command}\n") + len(command) + 3:]
    return block[:block.index("```")].splitlines()


@pytest.mark.slow  # a git + DVC repository and five `dvc exp` commands: 10-20 s
def test_a_rejected_dvc_exp_run_keeps_its_value_in_params_yaml_until_put_back(tmp_path):
    """What README.md ("Experiments and sweeps") says: DVC writes the -S value into params.yaml and
    leaves it there when check_params rejects it; only that line changes (params.yaml is laid out
    as DVC writes it); `dvc repro` fails until `git checkout params.yaml`; a misspelt key, --temp
    and --queue leave the file alone."""
    repo = make_repo(tmp_path / "repo", small_params(tmp_path, "exp-rejected"))
    shipped = (REPO / "params.yaml").read_text()
    (repo / "params.yaml").write_text(shipped)
    sh(repo, "git", "commit", "-qam", "the shipped params.yaml")
    command = "dvc exp run -S models.mlp.epochs=ten"
    expected = readme_session(command)
    error = expected[3]
    assert error in readme_errors()

    for refused in (["--temp", "-S", "models.mlp.epochs=ten"], ["-S", "models.mlp.dropuot=0.3"]):
        assert sh(repo, "dvc", "exp", "run", *refused, check=False).returncode != 0
        assert (repo / "params.yaml").read_text() == shipped, refused
    sh(repo, "dvc", "exp", "run", "--queue", "-S", "models.mlp.epochs=ten")
    assert (repo / "params.yaml").read_text() == shipped
    sh(repo, "dvc", "queue", "remove", "--all")

    done = subprocess.run(command.split(), cwd=repo, env=repo_env(repo), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    assert done.returncode != 0
    # As README.md shows it, but for the experiment's name, which DVC draws at random, and DVC's
    # warnings that it has no outputs to restore: this repository never ran the pipeline.
    shown = [line for line in done.stdout.strip().splitlines() if not line.startswith("WARNING: No file hash info")]
    assert [re.sub(r"'[a-z]+-[a-z]+'", "'based-tell'", line) for line in shown] == expected, done.stdout
    changed = [(a, b) for a, b in zip(shipped.splitlines(), (repo / "params.yaml").read_text().splitlines()) if a != b]
    assert changed == [("    epochs: 20", "    epochs: ten")]
    assert len((repo / "params.yaml").read_text().splitlines()) == len(shipped.splitlines())

    again = sh(repo, "dvc", "repro", check=False)
    assert again.returncode != 0 and error in again.stderr.splitlines()

    sh(repo, "git", "checkout", "params.yaml")
    assert (repo / "params.yaml").read_text() == shipped
    assert stages_run(sh(repo, "dvc", "repro", "check_params").stdout) == ["check_params"]
