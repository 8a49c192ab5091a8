"""What each test module cost in CPU seconds: `python -m pytest -p tests.support.cpu_profile` prints
a table at the end of the run, each module's wall seconds beside the CPU seconds of the test's own
process and of the child processes it waited for (`dvc`, the stages, servers, browsers).

On 2 cores the full tier keeps both busy, so its time is its CPU: this says where that goes
(docs/testing.md quotes it). A child's CPU counts once it is waited for, its own waited-for children
included: one a test leaves unwaited counts in the test during which Python reaps it, and a process
nobody waits for (a server's worker killed with it) not at all."""

import os
import time

import pytest

KEY = "cpu_profile"  # the user property each test's last report carries to the main process
STARTED = pytest.StashKey[tuple[float, float, float]]()


def now() -> tuple[float, float, float]:
    """Wall clock, this process's CPU, its waited-for children's CPU."""
    times = os.times()
    return time.monotonic(), times.user + times.system, times.children_user + times.children_system


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item):
    item.stash[STARTED] = now()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if call.when == "teardown":
        spent = [after - before for before, after in zip(item.stash[STARTED], now(), strict=True)]
        report.user_properties.append((KEY, spent))  # pytest-xdist sends it to the main process
    return report


def pytest_terminal_summary(terminalreporter):
    modules: dict[str, list[float]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            for name, spent in getattr(report, "user_properties", ()):
                if name == KEY:
                    total = modules.setdefault(report.nodeid.split("::")[0], [0.0, 0.0, 0.0])
                    total[:] = [a + b for a, b in zip(total, spent, strict=True)]
    if not modules:
        return
    write = terminalreporter.write_line
    terminalreporter.section("CPU seconds by module (tests/support/cpu_profile.py)")
    write(f"{'wall':>8} {'own':>8} {'children':>8} {'CPU':>8}  module")
    for name, (wall, own, children) in sorted(modules.items(), key=lambda kv: -(kv[1][1] + kv[1][2])):
        write(f"{wall:8.1f} {own:8.1f} {children:8.1f} {own + children:8.1f}  {name}")
    wall, own, children = (sum(column) for column in zip(*modules.values(), strict=True))
    write(f"{wall:8.1f} {own:8.1f} {children:8.1f} {own + children:8.1f}  all {len(modules)} modules")
