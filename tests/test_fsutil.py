"""Process locks: exclusive while held, never stale after the holder is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from screening.errors import ConfigError
from screening.fsutil import exclusive_lock

REPO = Path(__file__).resolve().parents[1]


def test_second_holder_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    refused = pytest.raises(ConfigError, match=rf"another screening run .*pid {os.getpid()}")
    with exclusive_lock(lock, "screening run"), refused, exclusive_lock(lock, "screening run"):
        pass
    assert not lock.exists()  # removed on release
    with exclusive_lock(lock, "screening run"):  # and free again
        assert lock.exists()


def test_lock_of_a_sigkilled_holder_is_free(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    code = (
        "import sys, time\n"
        "from screening.fsutil import exclusive_lock\n"
        f"with exclusive_lock({str(lock)!r}, 'run'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
    with pytest.raises(ConfigError), exclusive_lock(lock, "run"):
        pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists()  # the file stays behind ...
    t0 = time.monotonic()
    with exclusive_lock(lock, "run"):  # ... but the lock died with its holder
        assert time.monotonic() - t0 < 1
