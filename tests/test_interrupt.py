"""wm.interrupt: a Ctrl-C that Python swallows still stops the stage, and nothing is committed."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wm.interrupt import raise_if_interrupted

from .conftest import REPO

# A Ctrl-C that lands in a weakref callback or a `__del__` is printed as "Exception ignored" and dropped
# by Python: this is how an interrupted collect once went on to write a complete-looking rollouts file.
SWALLOWED_CTRL_C = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from wm.files import atomic_path
    from wm.interrupt import install_sticky_interrupt
    from wm.parallel import WorkerPool

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here, inside __del__, whose exception Python ignores

    def work(i):
        if i == 0:
            Finalised()
            print("survived the interrupt", flush=True)
        return i

    install_sticky_interrupt()
    out, in_pool = Path(sys.argv[1]), sys.argv[2] == "pool"
    try:
        with atomic_path(out) as tmp, WorkerPool(1, lambda: None, ()) as pool:
            tmp.write_text("half-done work")
            done = list(pool.map(work, range(3))) if in_pool else [work(0)]
            print(f"finished {len(done)} items", flush=True)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


@pytest.mark.parametrize("mode", ["direct", "pool"])
def test_swallowed_ctrl_c_still_stops_the_stage(tmp_path, mode):
    """direct: the interrupt is swallowed in the last piece of work and only the commit can refuse;
    pool: the work stops at the next item instead of running on to the end."""
    out = tmp_path / "out.txt"
    proc = subprocess.run(
        [sys.executable, "-c", SWALLOWED_CTRL_C, str(out), mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "survived the interrupt" in proc.stdout  # the interrupt really was swallowed by Python
    assert proc.returncode == 130, proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # never committed
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert ("finished" in proc.stdout) == (mode == "direct")


def test_no_interrupt_is_a_no_op():
    raise_if_interrupted()  # this process was never interrupted: nothing to raise


# A stage with a pool of 2 worker processes, each busy with a long work item.
BUSY_STAGE = textwrap.dedent(
    """
    import os, time
    from wm.cli import user_errors
    from wm.interrupt import install_sticky_interrupt
    from wm.parallel import WorkerPool

    @user_errors
    def main():
        with WorkerPool(2, os.getpid, ()) as pool:
            list(pool.map(time.sleep, [120.0] * 4))

    install_sticky_interrupt()
    main()
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # an orphan's zombie waits for whoever adopted it to reap it


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from Linux's /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_stage_leaves_no_worker_behind(sig):
    """SIGTERM (`kill`): the stage stops its workers mid-item and exits at once with one line and 143, not after
    its in-flight work; SIGKILL: the workers notice their parent is gone and exit. Both used to leave the
    workers playing out their episodes as orphans."""
    proc = subprocess.Popen(
        [sys.executable, "-c", BUSY_STAGE], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    workers: list[int] = []
    try:
        deadline = time.time() + 60
        while len(workers) < 2 and time.time() < deadline:  # 2 workers (plus multiprocessing's resource tracker)
            time.sleep(0.2)
            workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
        assert len(workers) == 2
        time.sleep(3.0)  # past the workers' start-up: both are inside time.sleep(120)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=20)
        if sig == signal.SIGTERM:
            assert proc.returncode == 143
            assert stderr.strip().splitlines()[-1].startswith("interrupted (SIGTERM):") and "Traceback" not in stderr
        deadline = time.time() + 10
        while any(map(_alive, workers)) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, workers))
    finally:
        proc.kill()
        for pid in filter(_alive, workers):
            os.kill(pid, signal.SIGKILL)
