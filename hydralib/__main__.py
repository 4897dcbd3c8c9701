"""`python -m hydralib <command> ...`: the project's command line (see `python -m hydralib --help`)."""
import sys

from .suite import main as suite_main
from .suite import report_main

COMMANDS = {
    "suite": "run the notebooks on a profile with papermill (make suite, make test); --dry-run lists them",
    "report": "write build/<profile>/report.html again from what a suite run left there",
    "store": "export a profile's results (runs, claims, figures) as one archive, or import one: store export|import",
    "grade": "grade a folder of submitted notebooks with the hidden tests; writes a CSV of points and feedback",
}

USAGE = "usage: python -m hydralib {" + ",".join(COMMANDS) + "} [options]   (python -m hydralib COMMAND --help)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        stream = sys.stdout if argv else sys.stderr
        stream.write(USAGE + "\n\ncommands:\n" + "".join(f"  {name:<8} {text}\n" for name, text in COMMANDS.items()))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "suite":
        return suite_main(rest)
    if command == "report":
        return report_main(rest)
    # --- store: results packs (hydralib/results_pack.py) ---
    if command == "store":
        from .results_pack import store_main  # lazy: the run store loads torch, not needed to check arguments
        return store_main(rest)
    # --- end store ---
    if command == "grade":
        from .grading import main as grade_main  # lazy: an instructor's tool, not needed to check arguments
        return grade_main(rest)
    sys.stderr.write(f"unknown command {command!r}\n{USAGE}\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
