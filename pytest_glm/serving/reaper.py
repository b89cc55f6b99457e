"""Watchdog: ``python -m pytest_glm.serving.reaper OWNER_PID SERVER_PGID``.

Started in its own session next to each launched server. When the owning pytest process disappears
without stopping the server (SIGKILL, OOM kill, a crashed CI runner), it terminates the server's process
group, waits, then kills it. It exits by itself as soon as the server's group is gone.
"""

from __future__ import annotations

import os
import signal
import sys
import time

POLL = 1.0
GRACE = 20.0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: list[str]) -> int:
    owner, pgid = int(argv[0]), int(argv[1])
    while group_alive(pgid):
        if not alive(owner):
            try:
                os.killpg(pgid, signal.SIGTERM)
                deadline = time.monotonic() + GRACE
                while group_alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.5)
                if group_alive(pgid):
                    os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return 0
        time.sleep(POLL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
