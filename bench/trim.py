"""Run a Python program (`-m MODULE args` or `PATH args`) so that SIGUSR2 trims its heap.

Why: start-up (imports, config parsing) frees memory that glibc keeps resident. A server's first
clients reuse it without moving RSS, so an idle-to-held RSS delta reads low, even 0 for a cheap
server. The runner sends SIGUSR2 just before the idle baseline: malloc_trim(0) hands every free
heap page back to the kernel, so what the clients cost shows up in RSS. The handler writes
TRIM_MARK to stderr when done. Nothing else about the program changes.
"""

import ctypes
import os
import runpy
import signal
import sys

TRIM_MARK = b"BENCH-TRIMMED\n"
_malloc_trim = ctypes.CDLL(None).malloc_trim  # glibc; looked up now, not in the handler


def _trim(_signum, _frame) -> None:
    _malloc_trim(0)
    os.write(2, TRIM_MARK)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: trim.py -m MODULE [ARGS...] | trim.py PATH [ARGS...]")
    signal.signal(signal.SIGUSR2, _trim)
    if sys.argv[1] == "-m":
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
