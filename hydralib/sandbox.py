"""Run model-written HumanEval code with damage limitation (opt-in: see evaluate.humaneval_pass_at_1).

What a pass is: a trusted wrapper program (``_WRAPPER`` below, run as ``python -I -c``) reads a random
nonce from its stdin (the nonce is in neither the program text, the command line nor the environment),
closes stdin, runs the untrusted program text (prompt + completion cut at the HumanEval stop sequences +
the problem's tests), calls ``check(entry_point)`` itself, and only after ``check`` returned writes the
nonce to a private pipe. The evaluator counts a pass only when it reads exactly that nonce. Exit codes mean
nothing: ``exit(0)``, ``sys.exit(0)``, ``os._exit(0)``, ``raise SystemExit`` or a crash before the check
are all failures.

What is contained (each measure is detected at run time; ``containment()`` says which hold here):

* every program runs in its own session and process group, in a fresh temporary working directory, with a
  scrubbed environment (PATH=/usr/bin:/bin, HOME=that directory, LANG=C.UTF-8; ``python -I`` ignores
  PYTHON* variables and the user's site-packages);
* rlimits: address space (1 GiB), CPU seconds, file size (10 MiB), open files, core dumps off, and the
  number of processes (RLIMIT_NPROC, which the kernel enforces only for a non-root uid);
* stdout and stderr together are read up to ``output_limit`` bytes, then the pipe is closed (the program
  gets EPIPE), so huge output neither hangs nor fills the evaluator's memory;
* where ``unshare`` can make namespaces (as root, or with user namespaces): a PID namespace whose init is
  the wrapper (``--kill-child``: when the run ends, every process it started is killed by the kernel, even
  ones that called setsid or daemonised) and a network namespace with no interfaces up (no network, not
  even localhost);
* when the evaluator runs as root: the program runs under a fresh unprivileged uid/gid of its own (no
  supplementary groups), so it cannot write outside its working directory and world-writable places, cannot
  read files that are not world-readable, cannot signal the evaluator, and RLIMIT_NPROC applies to it.
  After the run every process of that uid is killed (``kill(-1)`` as that uid), and files it left at the
  top of /tmp, /var/tmp and /dev/shm are removed;
* after every program (not only on timeout) its process group is killed and its directory removed.

When the interpreter lives where that uid cannot read (e.g. /root/.pyenv), the wrapper imports the standard
modules HumanEval programs use (``PRELOAD`` in the wrapper) before it drops privileges; a program importing
anything else there fails with PermissionError and counts as not passed.

What is NOT contained: this is damage limitation against accidents and sloppy model code, not a security
boundary against a determined attacker. The program can read any world-readable file (the repository, the
Python installation, /etc), use CPU and memory up to the limits, and write to world-writable directories
during the run. Code that runs inside the wrapper's interpreter can in principle find the nonce in memory
(frames, ``gc``) and forge a pass, or monkeypatch builtins the tests rely on; a model that does this on
purpose is not measured honestly by any in-process harness. Without root and without user namespaces, the
program runs as the evaluating user (it can read that user's files and signal that user's processes) and
processes that leave the session can survive. Run untrusted models' code in a container or VM.
"""
from __future__ import annotations

import functools
import os
import pwd
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert", "\n```")

SANDBOX_UID_RANGE = (1_500_000_000, 2_000_000_000)  # fresh uids with no account, one per run
MEMORY_BYTES = 1 << 30
FILE_BYTES = 10 << 20
MAX_PROCESSES = 8  # processes and threads of the sandbox uid
OUTPUT_LIMIT = 64 << 10
_PATH = "/usr/bin:/bin"


def truncate_completion(text: str, stop_sequences: tuple[str, ...] = STOP_SEQUENCES) -> str:
    """The completion up to the first HumanEval stop sequence (top-level def/class/if __name__/print/#/
    assert, or a closing markdown fence): what the model writes after the function body is never run."""
    cut = len(text)
    for stop in stop_sequences:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def build_program(problem: dict, completion: str) -> str:
    """Prompt + truncated completion + the problem's tests; the wrapper, not the text, calls check()."""
    return problem["prompt"] + truncate_completion(completion) + "\n\n" + problem["test"] + "\n"


@dataclass
class Result:
    passed: bool
    status: str  # "passed", "failed" (returned without the marker), "timeout"
    output: str  # the first output_limit bytes of stdout and stderr, decoded
    seconds: float


# The trusted wrapper. argv: marker fd, program path, entry point, uid (or -1), process limit.
_WRAPPER = r"""
import os, sys, resource, traceback
PRELOAD = ("math", "re", "string", "collections", "itertools", "functools", "heapq", "bisect", "typing",
           "hashlib", "random", "fractions", "decimal", "statistics", "operator", "copy", "json", "datetime",
           "array", "struct", "numbers", "textwrap", "unicodedata", "queue", "socket", "subprocess", "time",
           "signal", "threading", "ctypes", "io", "os.path", "shutil", "tempfile", "pathlib", "cmath",
           "encodings.idna", "encodings.ascii", "encodings.latin_1", "traceback", "linecache", "tokenize")


def main(marker, path, entry, uid, nproc):
    os.set_inheritable(marker, False)
    nonce = b""
    while not nonce.endswith(b"\n"):
        chunk = os.read(0, 64)
        if not chunk:
            os._exit(3)
        nonce += chunk
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if uid >= 0:
        # the interpreter may live where the sandbox uid cannot read (e.g. /root/.pyenv): load what
        # HumanEval programs import while still privileged
        for name in PRELOAD:
            try:
                __import__(name)
            except BaseException:
                pass
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    if nproc > 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    try:
        with open(path, encoding="utf-8") as f:
            code = compile(f.read(), path, "exec")
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(code, namespace)
        namespace["check"](namespace[entry])
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        os._exit(1)
    os.write(marker, nonce)
    os._exit(0)


main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
"""


def _own_uid_processes(uid: int) -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count


@functools.lru_cache(maxsize=None)
def _unshare_prefix() -> tuple[str, ...] | None:
    """The unshare command line that works here (PID + network namespace), or None."""
    unshare = shutil.which("unshare") or ("/usr/bin/unshare" if os.path.exists("/usr/bin/unshare") else None)
    if unshare is None:
        return None
    base = [unshare, "--pid", "--fork", "--kill-child", "--net"]
    candidates = [base] if os.geteuid() == 0 else [[unshare, "--user", "--map-root-user", *base[1:]]]
    for prefix in candidates:
        try:
            probe = subprocess.run([*prefix, sys.executable, "-I", "-S", "-c",
                                    "import os, socket; assert os.getpid() == 1\n"
                                    "s = socket.socket()\n"
                                    "try:\n    s.connect(('1.1.1.1', 53))\nexcept OSError:\n    pass\n"
                                    "else:\n    raise SystemExit(5)"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return tuple(prefix)
    return None


@functools.lru_cache(maxsize=None)
def _can_drop_privileges() -> bool:
    if os.geteuid() != 0:
        return False
    uid = SANDBOX_UID_RANGE[0] + 7
    try:
        probe = subprocess.run([sys.executable, "-I", "-S", "-c",
                                f"import os; os.setgroups([]); os.setgid({uid}); os.setuid({uid})\n"
                                f"assert os.getuid() == os.geteuid() == {uid} and not os.getgroups()"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def containment() -> dict:
    """What the sandbox can enforce on this machine (probed once, then cached)."""
    prefix = _unshare_prefix()
    drop = _can_drop_privileges()
    return {"pid_namespace": prefix is not None, "network_namespace": prefix is not None,
            "unprivileged_user": drop, "process_limit": drop or os.geteuid() != 0,
            "kill_all_processes_afterwards": prefix is not None or drop,
            "process_group_killed": True, "scrubbed_environment": True, "fresh_directory": True,
            "rlimits": True, "output_capped": True,
            "user_namespace": prefix is not None and "--user" in prefix}


def _fresh_uid() -> int:
    while True:
        uid = SANDBOX_UID_RANGE[0] + secrets.randbelow(SANDBOX_UID_RANGE[1] - SANDBOX_UID_RANGE[0])
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        if _own_uid_processes(uid) == 0:
            return uid


def _limits(memory_bytes: int, cpu_seconds: int) -> None:
    """In the child before exec (applies to unshare, the wrapper and everything it starts)."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _kill_everything_i_can() -> None:
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


def _kill_uid(uid: int) -> None:
    """Kill every process running as the sandbox uid (kill(-1) from a helper with that uid)."""
    true = shutil.which("true", path=_PATH) or "/bin/true"
    for _ in range(2):
        try:  # preexec_fn runs after the switch to user=uid, and kill(-1) spares the caller
            subprocess.run([true], user=uid, group=uid, extra_groups=[], preexec_fn=_kill_everything_i_can,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        if _own_uid_processes(uid) == 0:
            return


def _remove_files_of(uid: int) -> None:
    for folder in ("/tmp", "/var/tmp", "/dev/shm"):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != uid:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)
            except OSError:
                pass


def run_program(source: str, entry_point: str, timeout: float = 5.0, memory_bytes: int = MEMORY_BYTES,
                output_limit: int = OUTPUT_LIMIT, max_processes: int = MAX_PROCESSES) -> Result:
    """Run a program text (which must define ``check`` and ``entry_point``) contained as far as this
    machine allows; passed only if the wrapper's marker arrives after check(entry_point) returned."""
    start = time.monotonic()
    prefix = _unshare_prefix()
    uid = _fresh_uid() if _can_drop_privileges() else -1
    if uid >= 0:
        nproc = max_processes
    elif os.geteuid() != 0:  # NPROC counts every process of the user: allow the ones running now
        nproc = _own_uid_processes(os.getuid()) + max_processes
    else:
        nproc = 0
    folder = tempfile.mkdtemp(prefix="hydralib-sandbox-")
    marker_r = marker_w = -1
    process = None
    output = bytearray()
    marker = b""
    status = "failed"
    try:
        os.chmod(folder, 0o700)
        path = Path(folder) / "program.py"
        path.write_text(source, encoding="utf-8")
        if uid >= 0:
            os.chown(folder, uid, uid)
            os.chown(path, uid, uid)
        nonce = secrets.token_hex(32).encode() + b"\n"
        marker_r, marker_w = os.pipe()
        command = [*(prefix or ()), sys.executable, "-I", "-c", _WRAPPER, str(marker_w), str(path),
                   entry_point, str(uid), str(nproc)]
        cpu = max(1, int(timeout) + 1)
        process = subprocess.Popen(command, cwd=folder, env={"PATH": _PATH, "HOME": folder, "LANG": "C.UTF-8"},
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   pass_fds=(marker_w,), start_new_session=True,
                                   preexec_fn=functools.partial(_limits, memory_bytes, cpu))
        os.close(marker_w)
        marker_w = -1
        try:
            process.stdin.write(nonce)
            process.stdin.close()
        except OSError:
            pass
        os.set_blocking(marker_r, False)
        out_fd = process.stdout.fileno()
        os.set_blocking(out_fd, False)
        selector = selectors.DefaultSelector()
        selector.register(out_fd, selectors.EVENT_READ, "out")
        selector.register(marker_r, selectors.EVENT_READ, "marker")
        deadline = start + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            if process.poll() is not None and not selector.get_map():
                break
            for key, _ in selector.select(timeout=min(left, 0.05)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if key.data == "marker":
                    marker = (marker + chunk)[:len(nonce) + 1]
                    if not chunk:
                        selector.unregister(key.fd)
                else:
                    output += chunk[:output_limit - len(output)]
                    if not chunk or len(output) >= output_limit:
                        selector.unregister(key.fd)
                        if chunk:
                            process.stdout.close()  # the program gets EPIPE instead of filling memory
            if process.poll() is not None:
                # the wrapper has exited; whatever it wrote is in the pipe buffer. Descendants that still
                # hold the pipes open are not waited for.
                for fd, key in list(selector.get_map().items()):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        chunk = b""
                    if key.data == "marker":
                        marker = (marker + chunk)[:len(nonce) + 1]
                    else:
                        output += chunk[:output_limit - len(output)]
                break
        selector.close()
    finally:
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # always, not only on timeout
            except (ProcessLookupError, PermissionError):
                pass
            process.kill()
            process.wait()
            if process.stdout and not process.stdout.closed:
                process.stdout.close()
        if uid >= 0:
            _kill_uid(uid)
            _remove_files_of(uid)
        for fd in (marker_r, marker_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
    passed = status != "timeout" and marker == nonce
    if passed:
        status = "passed"
    return Result(passed=passed, status=status, output=bytes(output).decode("utf-8", "replace"),
                  seconds=time.monotonic() - start)


def run_completion(problem: dict, completion: str, timeout: float = 5.0, **limits) -> Result:
    """One HumanEval problem (task_id, prompt, test, entry_point) with one completion."""
    return run_program(build_program(problem, completion), problem["entry_point"], timeout=timeout, **limits)
