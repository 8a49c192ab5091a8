"""Which process this is, in terms another process can check later, and the watch that stops a
stage whose `dvc` died.

A PID alone says little: PIDs are reused, and a container or a second machine has PIDs of its
own. So a process is named by its host, the PID space it lives in (Linux: the boot and the PID
namespace) and its start time; another process can then prove it gone, or prove nothing.
"""

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

POLL_S = 1.0
UNREADABLE = "?"  # a process that exists but whose start time this user may not read
_PROC_STAT = Path("/proc/self/stat").is_file()
# A stage that has not ended this long after its SIGTERM gets a second, which raises at once.
SECOND_SIGTERM_S = 30.0


def host() -> str:
    return socket.gethostname()


def pid_space() -> str:
    """Where a PID means the same process: on Linux the boot and the PID namespace, so a rebooted
    machine, a container or another machine with the same host name is never mistaken for this one."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:  # not Linux
        return f"boot@{psutil.boot_time():.0f}"


def start_time(pid: int) -> str | None:
    """When process `pid` started, as a string that is the same every time it is read and differs
    for a later process given the same PID; None when there is no such process (or it is a zombie).

    On Linux the clock ticks since boot (field 22 of /proc/PID/stat): exact, and unlike a wall-clock
    time it does not move when the clock is set. Elsewhere psutil's creation time.
    """
    if not _PROC_STAT:
        try:
            process = psutil.Process(pid)
            return None if process.status() == psutil.STATUS_ZOMBIE else f"{process.create_time():.3f}"
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            return UNREADABLE
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no such process
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    state, ticks = fields[0], fields[19]  # fields 3 and 22
    return None if state in "ZXx" else ticks


def identity() -> dict[str, str]:
    """This process, as the tags of the MLflow run it opens record it."""
    return {
        "host": host(),
        "pid_space": pid_space(),
        "pid": str(os.getpid()),
        "start_time": start_time(os.getpid()) or "",
    }


def gone(recorded: dict[str, str]) -> bool | None:
    """True when the process `recorded` (an identity()) has provably ended; None when this machine
    cannot tell (it ran elsewhere)."""
    if recorded.get("host") != host() or recorded.get("pid_space") != pid_space():
        return None
    pid, started = recorded.get("pid", ""), recorded.get("start_time")
    if not pid.isdigit():
        return True
    now = start_time(int(pid))
    if now == UNREADABLE:
        return None
    return now is None if not started else now != started  # no start time recorded: the PID alone


def stop_with_dvc() -> None:
    """Under `dvc repro` or `dvc exp run`, end this stage when the `dvc` process that runs it dies.

    DVC runs a stage through a shell and waits for it; killed with SIGKILL, it leaves the stage
    training on as an orphan, and the next `dvc repro` trains a second copy beside it. So the
    nearest `dvc` ancestor is watched (bash execs the stage, dash stays between). Call it from the
    main thread.
    """
    if os.environ.get("DVC_STAGE"):
        dvc = next((p for p in psutil.Process().parents() if _is_dvc(p)), None)
        if dvc is not None:
            stop_with(dvc.pid, "dvc")


def stop_with(pid: int, name: str) -> None:
    """Once process `pid` (`name`, for the log) is gone, send this process the SIGTERM a user would
    (a stage then ends its run KILLED and writes no output), unless a SIGINT or SIGTERM reached it
    first: it is ending already. Watched from a daemon thread; call it from the main thread."""
    started = start_time(pid)
    if started is not None:
        threading.Thread(
            target=_watch, args=(pid, name, started, _signals_received()), name=f"watch-{name}", daemon=True
        ).start()


def _signals_received() -> tuple[socket.socket, socket.socket]:
    """A socket that gets a byte for each signal this process handles from now on (signal.set_wakeup_fd).

    Ctrl-C under dash kills the shell, and `dvc` returns while the stage is still ending its run: a
    SIGTERM then would cut that cleanup short. This tells the watch that a stop is already under way.
    """
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    return reader, writer  # the writer too: it must stay open


def _is_dvc(process: psutil.Process) -> bool:
    """`dvc …` as a console script (python …/bin/dvc), `python -m dvc` or a frozen binary."""
    try:
        args = process.cmdline()[:3]
    except psutil.Error:
        return False
    names = [Path(arg).name for arg in args]
    return "dvc" in names[:2] or "dvc.exe" in names[:2] or args[1:3] == ["-m", "dvc"]


def _watch(pid: int, name: str, started: str, signals: tuple[socket.socket, socket.socket]) -> None:
    while start_time(pid) == started:
        time.sleep(POLL_S)
    try:
        if {signal.SIGINT, signal.SIGTERM} & set(signals[0].recv(4096)):
            return  # already stopping: let it finish
    except BlockingIOError:  # no signal so far
        pass
    log.warning("%s (pid %d), which ran this stage, is gone: stopping", name, pid)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(SECOND_SIGTERM_S)
    os.kill(os.getpid(), signal.SIGTERM)
