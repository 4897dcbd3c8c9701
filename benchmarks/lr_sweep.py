"""The confirmatory sweep: the operating point's rates, word length and Figure 2 rows, chosen on validation rows of
tuning seeds (100-102), never on an evaluation seed's test rows (hydralib/tuning.py has the protocol).

    python benchmarks/lr_sweep.py --dry-run        # the runs and their expected time; trains nothing
    python benchmarks/lr_sweep.py --write          # all stages; writes hydralib/operating_point.json and the
                                                   # decision tables into docs/operating_point.md
    python benchmarks/lr_sweep.py --stages rates --grid '{"LoRA r8": [3e-3, 5e-3]}' --seeds 100 --steps 4 \\
        --n-test 32 --point-file /tmp/point.json --doc /tmp/point.md --write     # a tiny grid, to see it work

Every run goes through the run store (--store), so a stopped sweep resumes where it stopped. Stage 2 and 3 use
the rates stage 1 chose in the same invocation (else the point file's). Prints one table per stage and, last, one
line of JSON with the chosen settings.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from hydralib import tuning
from hydralib.operating_point import EVALUATION_SEEDS, POINT_FILE, TUNING_SEEDS, load_point, write_point
from hydralib.store import RunStore

REPO = Path(__file__).resolve().parents[1]
EDGE_EXTENSIONS = 2  # a rate chosen at the grid's edge gets up to two more rates beyond it


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(tuning.STAGES), choices=tuning.STAGES)
    parser.add_argument("--grid", type=json.loads, default=tuning.RATE_GRID,
                        help="stage rates: JSON {family label: [rates]}; families: " + ", ".join(tuning.FAMILIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    parser.add_argument("--word-lengths", type=int, nargs="+", default=tuning.WORD_LENGTHS)
    parser.add_argument("--rows-per-component", type=int, nargs="+", default=tuning.ROWS_PER_COMPONENT)
    parser.add_argument("--steps", type=int, default=tuning.MAIN_POINT["steps"], help="stages rates and word_length")
    parser.add_argument("--n-test", type=int, default=tuning.MAIN_POINT["n_test"], help="validation rows a seed")
    parser.add_argument("--store", default=str(REPO / "build" / "lr_sweep"))
    parser.add_argument("--processes", type=lambda v: v if v == "auto" else int(v), default=2)
    parser.add_argument("--point-file", default=str(POINT_FILE))
    parser.add_argument("--doc", default=str(REPO / "docs" / "operating_point.md"))
    parser.add_argument("--write", action="store_true", help="write the chosen settings and the decision tables")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their expected time only")
    args = parser.parse_args(argv)
    try:
        tuning.check_tuning_seeds(args.seeds)
        tuning.check_grid(args.grid)
    except ValueError as err:
        parser.error(str(err))
    return args


def stage_trials(stage: str, args, point: dict, main: dict) -> list[dict]:
    length = point["data"]["max_word_length"]
    if stage == "rates":
        return tuning.rate_trials(args.grid, args.seeds, main, length)
    if stage == "word_length":
        return tuning.word_length_trials(args.word_lengths, args.seeds, main, point)
    return tuning.figure2_trials(args.rows_per_component, args.seeds, {**main, "n_components": 1}, point, length)


def main(argv=None) -> None:
    args = parse_args(argv)
    point, store = load_point(args.point_file), RunStore(args.store)
    main_point = {**tuning.MAIN_POINT, "steps": args.steps, "n_test": args.n_test}
    planned = [t for stage in args.stages for t in stage_trials(stage, args, point, main_point)]
    print(f"seeds {args.seeds} (evaluation seeds {list(EVALUATION_SEEDS)} are refused); validation rows: each tuning "
          f"seed's own held-out {args.n_test} rows; criterion: {tuning.CRITERION}")
    print("expected: " + tuning.expected_cost(planned, store, args.processes)["line"]
          + (" (stages after the first: at the point file's rates, as an estimate)" if len(args.stages) > 1 else ""))
    if args.dry_run:
        return
    command = "python benchmarks/lr_sweep.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    decisions, records, tables, chosen = {}, {}, [], {}
    tuned_at = point["data"]["max_word_length"]  # the length stage 1 and 3 run at
    start = time.perf_counter()
    for stage in args.stages:
        summary = tuning.summarise_trials(tuning.run_trials(stage_trials(stage, args, point, main_point), store,
                                                            args.processes))
        for _ in range(EDGE_EXTENSIONS if stage == "rates" else 0):
            wider = tuning.beyond_edges(args.grid, summary)
            if not wider:
                break
            print(f"best at the grid's edge: {wider} (one more rate each, beyond the edge)", flush=True)
            args.grid = {**args.grid, **wider}
            summary = tuning.summarise_trials(tuning.run_trials(stage_trials(stage, args, point, main_point), store,
                                                                args.processes))
        if stage == "rates":
            decisions["rates"] = tuning.choose_rates(summary, point["rates"])
            shown, what = tuning.best_values(summary), "lr"
            chosen["rates"] = decisions["rates"]
        elif stage == "word_length":
            length = tuning.choose_word_length(summary)
            decisions["data"] = {"max_word_length": length}
            shown, what = {family: length for family in tuning.WORD_TARGETS}, "longest word"
            chosen["max_word_length"] = length
        else:
            rows = tuning.choose_rows(summary)
            decisions["figure2"] = {"rows_per_component": rows}
            shown, what = {family: rows for family in {r["family"] for r in summary}}, "rows per component"
            chosen["rows_per_component"] = rows
        section = {"rates": "rates", "word_length": "data", "figure2": "figure2"}[stage]
        criterion = {"rates": tuning.CRITERION,
                     "word_length": f"the longest word length whose mean validation exact match reaches "
                                    f"{tuning.WORD_TARGETS} (else the shortest)",
                     "figure2": f"the most rows per component at which full fine-tuning's mean validation exact "
                                f"match on 1 component stays below {tuning.FIGURE2_CEILING}"}[stage]
        steps = main_point["steps"] if stage != "figure2" else "every row once (rows per component / 32, rounded up)"
        records[section] = tuning.provenance(args.seeds, criterion, command, steps=steps, validation_rows=args.n_test)
        point = tuning.updated_point(point, {section: decisions[section]}, {section: records[section]})
        table = tuning.decision_table(summary, shown, what)
        tables.append(f"### Stage {stage}\n\nCriterion: {criterion}.\n\n{table}")
        print(f"\n{tables[-1]}\n", flush=True)
    if chosen.get("max_word_length", tuned_at) != tuned_at:
        print(f"the longest word moved from {tuned_at} to {chosen['max_word_length']} letters: with --write, run "
              "--stages rates figure2 again to tune at it (they read the point file's length)")
    overlap = tuning.held_out_overlap(args.seeds, list(EVALUATION_SEEDS), tuning.MAIN_POINT["n_components"],
                                      tuning.MAIN_POINT["n_train"], args.n_test,
                                      **tuning.word_data(point["data"]["max_word_length"]))
    if args.write:
        write_point(point, args.point_file)
        tuning.write_doc_section(args.doc, "\n\n".join([
            f"## The confirmatory sweep ({records[next(iter(records))]['date']})",
            f"`{command}`: tuning seeds {args.seeds}, each run scored on "
            f"its own corpus' {args.n_test} held-out rows (validation rows: the training distribution, words never in "
            f"its training rows); of those {overlap['validation_rows']} rows, {overlap['in_evaluation_test']} share "
            f"their prompt with a test row of the evaluation seeds {list(EVALUATION_SEEDS)} and "
            f"{overlap['in_evaluation_train']} with one of their training rows. Steps are set by the budget, not "
            f"tuned. The chosen settings are in `{Path(args.point_file).name}` "
            f"(hydralib.operating_point reads them), with this provenance.", *tables]))
    print(json.dumps({"seconds": round(time.perf_counter() - start), "overlap": overlap, **chosen}))


if __name__ == "__main__":
    main()
