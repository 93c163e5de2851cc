"""`python -m pipeline.main MODULE [ARGS...]`: runs stage entry module MODULE's `main(ARGS)`.

What each `stages/NN_*.sh` execs. A known failure (bad input, config error, disk full, read-only
folder; see pipeline/errors.py) ends with one `error: ...` line on stderr and exit status 2; an
unexpected one keeps its traceback. CRITEO_PNN_DEBUG=1 shows the traceback of known ones too.

The stage's artifacts root is its `--artifacts DIR` (what ./run.sh passes); without one,
$CRITEO_PNN_ARTIFACTS if set, else artifacts/ under the repository (pipeline/settings.py).
"""

from __future__ import annotations

import importlib
import sys

from pipeline import errors

USAGE = "usage: python -m pipeline.main MODULE [ARGS...]   (e.g. preprocessing.raw --tag demo)"


def _run_module(name: str, args: list[str]):
    module = importlib.import_module(name)
    # argparse names the program after argv[0]: the stage module's file, as with `python -m`.
    sys.argv = [getattr(module, "__file__", None) or name, *args]
    return module.main(args)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr if not argv else sys.stdout)
        return 0 if argv else errors.EXIT_STATUS
    return errors.run(_run_module, argv[0], argv[1:])


if __name__ == "__main__":
    sys.exit(main())
