"""A command's own wall time and peak resident memory, measured from a parent of any size.

Linux keeps a process's peak RSS (`ru_maxrss`) across execve, starting from the memory of the process it was
spawned from: a child of a benchmark that holds a loaded model reports that model's size even if the command
itself needs less (a 1.5 GB Python process spawning `python -c pass` reads 1.5 GB). So the command runs under a
small Python launcher, and the figure is the launcher's child's: the command's own.

    from peak_rss import run
    done = run(["memft", "audit", "DIR"])  # CompletedProcess with .seconds and .peak_rss_mb
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

# Runs argv[2:], writes its ru_maxrss (KiB on Linux) to the file argv[1], exits with its code. Small: what the
# command's figure starts from.
LAUNCHER = ("import os, subprocess, sys\n"
            "p = subprocess.Popen(sys.argv[2:])\n"
            "_, status, usage = os.wait4(p.pid, 0)\n"
            "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
            "sys.exit(os.waitstatus_to_exitcode(status))\n")


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run `cmd` with its output captured -> CompletedProcess with `seconds` (wall) and `peak_rss_mb` (the command's
    own peak resident memory) set on it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as rss:
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-c", LAUNCHER, rss.name, *cmd], stdout=out, stderr=err, env=os.environ.copy())
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        done = subprocess.CompletedProcess(cmd, code, out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"))
        text = open(rss.name).read().strip()
    done.seconds, done.peak_rss_mb = round(wall, 1), round(int(text) / 1024, 1) if text else None
    return done
