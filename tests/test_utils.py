import subprocess
import sys
import textwrap

from .conftest import REPO

# A Ctrl-C that lands in a weakref callback or a `__del__` is printed as "Exception ignored" and dropped:
# this is how an interrupted collect used to go on and write a complete-looking data/rollouts.h5.
SWALLOWED_CTRL_C = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from wm.utils import atomic_path, install_sticky_interrupt

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)  # the handler runs here, inside __del__, whose exception Python ignores

    install_sticky_interrupt()
    out = Path(sys.argv[1])
    try:
        with atomic_path(out) as tmp:
            tmp.write_text("half-done work")
            Finalised()
            print("survived the interrupt", flush=True)
    except KeyboardInterrupt:
        sys.exit(130)
    """
)


def test_swallowed_ctrl_c_still_prevents_the_atomic_commit(tmp_path):
    out = tmp_path / "out.txt"
    proc = subprocess.run(
        [sys.executable, "-c", SWALLOWED_CTRL_C, str(out)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert "survived the interrupt" in proc.stdout  # the interrupt really was swallowed by Python
    assert proc.returncode == 130, proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())
