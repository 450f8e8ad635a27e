"""wm.interrupt: a Ctrl-C that Python swallows still stops the stage, and nothing is committed."""

import subprocess
import sys
import textwrap

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
