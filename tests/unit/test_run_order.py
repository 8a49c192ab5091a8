"""The order the full tier hands its modules to the two workers (tests/conftest.py): the longest
first, by this machine's last run, or in a fresh clone by the committed tests/module-seconds.json."""

import json

from tests.conftest import COMMITTED_SECONDS, TESTS, Module, hand_out_order, module_seconds


def test_a_fresh_clone_orders_by_the_committed_seconds_and_a_later_run_by_its_own():
    committed = json.loads(COMMITTED_SECONDS.read_text())
    assert module_seconds({}) == committed
    longest = max(committed, key=committed.get)
    assert module_seconds({longest: 0.5})[longest] == 0.5


def test_the_committed_seconds_name_every_module_of_the_full_tier_and_no_other():
    committed = set(json.loads(COMMITTED_SECONDS.read_text()))
    modules = {str(path.relative_to(TESTS.parent)) for path in TESTS.rglob("test_*.py")}
    # The load tier runs on demand (`-m load`), never in the full tier's order.
    on_demand = {m for m in modules if "pytestmark = pytest.mark.load" in (TESTS.parent / m).read_text()}
    assert committed - modules == set(), "modules that are gone: drop them from tests/module-seconds.json"
    missing = {m for m in modules - committed - on_demand if m.startswith("tests/system/")}
    assert missing == set(), (
        "slow modules without seconds: after a full run copy .pytest_cache/v/tiers/module-seconds "
        "to tests/module-seconds.json"
    )


def test_one_worker_builds_the_trained_template_while_the_other_starts_a_module_that_needs_none():
    modules = {
        "tests/system/test_a.py": Module(kind=0, seconds=200.0, templated=True),
        "tests/system/test_b.py": Module(kind=0, seconds=180.0, templated=True),
        "tests/system/test_c.py": Module(kind=0, seconds=150.0, templated=False),
        "tests/system/test_d.py": Module(kind=1, seconds=300.0, templated=False),
        "tests/unit/test_e.py": Module(kind=2, seconds=9.0, templated=False),
    }
    # By kind, the longest first; then the first template user leads and the longest module that
    # needs no template comes second, for the second worker.
    assert hand_out_order(modules, workers=2) == [
        "tests/system/test_a.py",
        "tests/system/test_c.py",
        "tests/system/test_b.py",
        "tests/system/test_d.py",
        "tests/unit/test_e.py",
    ]
    assert hand_out_order(modules, workers=3)[:3] == [
        "tests/system/test_a.py",
        "tests/system/test_c.py",
        "tests/system/test_d.py",
    ]
    # Without a template user (the fast tier), simply by kind and seconds.
    plain = {name: module._replace(templated=False) for name, module in modules.items()}
    assert hand_out_order(plain, workers=2) == sorted(plain, key=lambda n: (plain[n].kind, -plain[n].seconds))
