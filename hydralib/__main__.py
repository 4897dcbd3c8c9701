"""`python -m hydralib suite ...`: run the notebook suite (see hydralib.suite)."""
import sys

from .suite import main

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "suite":
        print("usage: python -m hydralib suite [--profile NAME] [--only NB ...] [-p KEY=VALUE ...]", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[2:]))
