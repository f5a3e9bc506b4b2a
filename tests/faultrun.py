"""Test launcher: run a script with a fault hook installed (the shipped scripts have none active).

    python tests/faultrun.py SCRIPT [ARGS...]   with FAULTRUN=<spec> in the environment

spec: `count:FILE` appends every fault point's label to FILE; `ACTION:N` or `ACTION:LABEL:N` acts at
the Nth point (of that label): kill (SIGKILL), sigint (Ctrl-C), eio (write error), enospc (full disk).
`fsize:BYTES` (with any spec, joined by `+`) sets RLIMIT_FSIZE in this process, SIGXFSZ ignored.
`nofile:N` sets RLIMIT_NOFILE to N, soft and hard, for good: where this process could raise the hard
limit again (root with CAP_SYS_RESOURCE), it re-runs itself under setpriv without that capability.
"""
import errno
import os
import resource
import runpy
import signal
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _hook(spec: str):
    counts = {}
    if spec.startswith("count:"):
        out = spec[len("count:"):]

        def count(label: str) -> None:
            with open(out, "a") as fh:
                fh.write(label + "\n")
        return count
    parts = spec.split(":")
    action, want_label, n = (parts[0], None, int(parts[1])) if len(parts) == 2 else (parts[0], parts[1], int(parts[2]))

    def act(label: str) -> None:
        if want_label is not None and label != want_label:
            return
        counts[0] = counts.get(0, 0) + 1
        if counts[0] != n:
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
            raise KeyboardInterrupt  # delivered at once in CPython; raised here for certainty
        if action == "eio":
            raise OSError(errno.EIO, f"Input/output error (test fault at {label})")
        if action == "enospc":
            raise OSError(errno.ENOSPC, f"No space left on device (test fault at {label})")
    return act


def _limit_open_files(n: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n + 1))
    except (ValueError, OSError):
        return  # the hard limit holds
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    if os.environ.get("FAULTRUN_NO_RAISE"):
        raise SystemExit("faultrun: cannot keep this process from raising its open-file limit")
    os.environ["FAULTRUN_NO_RAISE"] = "1"
    os.execvp("setpriv", ["setpriv", "--bounding-set=-sys_resource", sys.executable, *sys.argv])


def main() -> None:
    for spec in os.environ.get("FAULTRUN", "").split("+"):
        if spec.startswith("nofile:"):
            _limit_open_files(int(spec[len("nofile:"):]))
    script = Path(sys.argv[1])
    sys.argv = [str(script)] + sys.argv[2:]
    sys.path.insert(0, str(SCRIPTS))
    sys.dont_write_bytecode = True
    from sessionkit.codexfiles import faults
    for spec in filter(None, os.environ.get("FAULTRUN", "").split("+")):
        if spec.startswith("fsize:"):
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            limit = int(spec[len("fsize:"):])
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        elif not spec.startswith("nofile:"):
            faults.install(_hook(spec))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    main()
