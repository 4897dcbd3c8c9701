"""Run model-written HumanEval code with damage limitation (opt-in: see evaluate.humaneval_pass_at_1).

Who decides a pass: two processes that share no memory. The *program* (prompt + the completion cut at the
HumanEval stop sequences; untrusted) runs contained, defines the function and then only answers calls: it
reads arguments from one pipe and writes the function's return value to another. The *judge* (trusted: it
runs the problem's prompt and tests, never the completion) calls ``check`` with a stand-in for the
function that sends each call to the program, and writes a random nonce (which only it and the evaluator
know) to a private pipe after ``check`` returned. The evaluator counts a pass only when it reads that nonce
from the judge. Values cross as data (JSON of None, bool, int, float, str, list, tuple, set, dict, by
exact type): a returned object of any other type, such as an ``int`` subclass whose ``==`` is always true,
fails. Nothing the program does in its own process (walking stack frames, ``sys.settrace``, patching
builtins, ``exit(0)``, ``os._exit(0)``, a crash) reaches the judge's ``check``; exit codes mean nothing.

What is contained (each measure is detected at run time; ``containment()`` says which hold here and
lists, under "not_contained", what does not):

* every program runs in its own session and process group, in a fresh working directory, with a
  scrubbed environment (PATH=/usr/bin:/bin, HOME=that directory, LANG=C.UTF-8; ``python -I`` ignores
  PYTHON* variables and the user's site-packages);
* rlimits: address space (1 GiB a process), CPU seconds, file size (10 MiB), open files, core dumps off, and
  the number of processes (RLIMIT_NPROC, which the kernel enforces only for a non-root uid);
* all its processes together: at most ``total_memory_bytes`` (2 GiB) of memory, in a cgroup of their own
  (cgroup v2, or v1's memory controller) where one can be made, and killed through it afterwards;
* stdout and stderr together are read up to ``output_limit`` bytes, then the pipe is closed (the program
  gets EPIPE), so huge output neither hangs nor fills the evaluator's memory;
* where ``unshare`` can make namespaces (as root, or with user namespaces): a PID namespace whose init is
  the wrapper (``--kill-child``: when the run ends, the kernel kills every process it started, even ones
  that called setsid), with its own /proc (it sees no host process); a network namespace with no
  interface up (no network, not even localhost); an IPC namespace (SysV shared memory, semaphores and
  queues die with it); a mount namespace in which /tmp, /var/tmp, /dev/shm, /run/lock and the working
  directory are one private tmpfs of ``SCRATCH_BYTES`` (64 MiB) in all, gone when the run ends;
* when the evaluator runs as root: the program runs under a fresh unprivileged uid/gid of its own (no
  supplementary groups), so it cannot write outside its directory and world-writable places, cannot read
  files that are not world-readable, cannot signal the evaluator, and RLIMIT_NPROC applies to it. After
  the run every process of that uid is killed (``kill(-1)`` as that uid, until none is left), and the files
  and SysV IPC objects it left on the host (in /tmp, /var/tmp, /dev/shm, /run/lock) are removed;
* after every program (not only on timeout) its process group is killed and its directory removed.

When the interpreter lives where that uid cannot read (e.g. /root/.pyenv), the wrapper imports the standard
modules HumanEval programs use (``PRELOAD`` in the wrapper) before it drops privileges; a program importing
anything else there fails with PermissionError and counts as not passed.

What is NOT contained: this is damage limitation against accidents and sloppy model code, not a security
boundary against a determined attacker (a kernel exploit escapes all of it). The program can read any
world-readable file (the repository, the Python installation, /etc) and use CPU up to its time limit.
Without root and without user namespaces (a laptop, usually), it runs as the evaluating user: it can
read and change that user's files (``~/.ssh`` included), use the network, signal that user's processes
(the judge among them), and processes that leave its session can survive. Run untrusted models' code in a
container or VM.
"""
from __future__ import annotations

import functools
import json
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
MEMORY_BYTES = 1 << 30  # address space of each process
TOTAL_MEMORY_BYTES = 2 << 30  # all processes of one run together (where a cgroup can be made)
FILE_BYTES = 10 << 20
SCRATCH_BYTES = 64 << 20  # /tmp, /var/tmp, /dev/shm, /run/lock and the working directory together
MAX_PROCESSES = 8  # processes and threads of the sandbox uid
OUTPUT_LIMIT = 64 << 10
REPLY_LIMIT = 8 << 20  # one returned value, as JSON
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
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
    """The untrusted program: prompt + truncated completion. The tests run in the judge, never here."""
    return problem["prompt"] + truncate_completion(completion) + "\n"


def build_judge(problem: dict) -> str:
    """The trusted judge's text: the prompt (its helper functions, which some tests call) + the tests."""
    return problem["prompt"] + "\n\n" + problem["test"] + "\n"


@dataclass
class Result:
    passed: bool
    status: str  # "passed", "failed" (the judge gave no pass), "timeout"
    output: str  # the first output_limit bytes of the program's stdout and stderr, then the judge's account
    seconds: float


# Values between judge and program: JSON, by exact type, so that only plain data crosses.
_CODEC = r"""
import json, math

PLAIN = (type(None), bool, int, str)
TAGGED = {"tuple": tuple, "set": set, "frozenset": frozenset}


def encode(value, depth=0):
    kind = type(value)
    if depth > 64:
        raise ValueError("the value is nested more than 64 levels deep")
    if kind in PLAIN:
        return value
    if kind is float:
        return value if math.isfinite(value) else {"t": "float", "v": repr(value)}
    if kind is list:
        return [encode(v, depth + 1) for v in value]
    if kind in TAGGED.values():
        return {"t": kind.__name__, "v": [encode(v, depth + 1) for v in value]}
    if kind is dict:
        return {"t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"returned a value of type {kind.__module__}.{kind.__qualname__}; only None, bool, int, "
                    "float, str, list, tuple, set, frozenset and dict (exactly those types) are compared")


def decode(data):
    kind = type(data)
    if kind in (type(None), bool, int, str, float):
        return data
    if kind is list:
        return [decode(v) for v in data]
    if kind is dict and set(data) == {"t", "v"}:
        tag, items = data["t"], data["v"]
        if tag == "float" and items in ("inf", "-inf", "nan"):
            return float(items)
        if tag in TAGGED and type(items) is list:
            return TAGGED[tag](decode(v) for v in items)
        if tag == "dict" and type(items) is list and all(type(p) is list and len(p) == 2 for p in items):
            return {decode(k): decode(v) for k, v in items}
    raise ValueError("not an encoded value")
"""

# The program's wrapper (untrusted side). argv: request fd, reply fd, entry point, uid (or -1), process
# limit, scratch bytes (0: no private tmpfs). It reads program.py from its working directory.
_WRAPPER = _CODEC + r"""
import os, sys, resource, traceback
PRELOAD = ("math", "re", "string", "collections", "itertools", "functools", "heapq", "bisect", "typing",
           "hashlib", "random", "fractions", "decimal", "statistics", "operator", "copy", "json", "datetime",
           "array", "struct", "numbers", "textwrap", "unicodedata", "queue", "socket", "subprocess", "time",
           "signal", "threading", "ctypes", "io", "os.path", "shutil", "tempfile", "pathlib", "cmath",
           "encodings.idna", "encodings.ascii", "encodings.latin_1", "traceback", "linecache", "tokenize")


def private_scratch(size, uid):
    # one tmpfs on /tmp, its subfolders bound on the other world-writable folders: all bounded together
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    nosuid_nodev, bind = 2 | 4, 4096

    def mount(source, target, fstype, flags, data):
        if libc.mount(source, target, fstype, flags, data) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount {target.decode()}: {os.strerror(errno)}")
    mount(b"tmpfs", b"/tmp", b"tmpfs", nosuid_nodev, f"size={size},mode=1777".encode())
    for target in ("/var/tmp", "/dev/shm", "/run/lock"):
        if os.path.isdir(target):
            source = "/tmp/.hydralib-sandbox" + target.replace("/", "-")
            os.mkdir(source)
            os.chmod(source, 0o1777)
            mount(source.encode(), target.encode(), None, bind, None)
    home = "/tmp/work"
    os.mkdir(home, 0o700)
    if uid >= 0:
        os.chown(home, uid, uid)
    return home


def serve(function, requests, replies):
    for line in requests:
        try:
            reply = {"value": encode(function(*decode(json.loads(line))))}
        except BaseException as error:
            try:
                reply = {"error": type(error).__name__, "message": str(error)[:300]}
            except BaseException:
                reply = {"error": "BaseException", "message": ""}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()


def main(request_fd, reply_fd, entry, uid, nproc, scratch):
    for fd in (request_fd, reply_fd):
        os.set_inheritable(fd, False)
    with open("program.py", encoding="utf-8") as f:
        text = f.read()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    home = private_scratch(scratch, uid) if scratch > 0 else None
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
    if home is not None:
        os.chdir(home)
        os.environ["HOME"] = home
    requests, replies = os.fdopen(request_fd, "rb"), os.fdopen(reply_fd, "wb")
    try:
        namespace = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(text, "program.py", "exec"), namespace)
        function = namespace[entry]
        serve(function, requests, replies)
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
        leave(1)
    leave(0)


def leave(code):
    for stream in (sys.stdout, sys.stderr):  # what the program printed reaches the evaluator
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


main(*map(int, sys.argv[1:3]), sys.argv[3], *map(int, sys.argv[4:7]))
"""

# The judge (trusted side: the problem's prompt and tests only). argv: request fd, reply fd, verdict fd,
# entry point, reply limit. stdin: the nonce line, then the judge's text.
_JUDGE = _CODEC + r"""
import os, sys, traceback


class ProgramFailed(BaseException):  # not an Exception: a test's `except Exception` cannot swallow it
    pass


def main(request_fd, reply_fd, verdict_fd, entry, reply_limit):
    nonce = sys.stdin.buffer.readline()
    source = sys.stdin.buffer.read().decode("utf-8")
    requests, replies = os.fdopen(request_fd, "wb"), os.fdopen(reply_fd, "rb")
    calls = 0

    def candidate(*args):
        nonlocal calls
        calls += 1
        requests.write(json.dumps(encode(list(args))).encode() + b"\n")
        requests.flush()
        line = replies.readline(reply_limit + 1)
        if not line.endswith(b"\n"):
            raise ProgramFailed(f"call {calls}: the program " + ("sent more than the reply limit" if line
                                else "ended (or failed to load) instead of returning a value"))
        try:
            reply = json.loads(line)
            if type(reply) is dict and set(reply) == {"value"}:
                return decode(reply["value"])
            if type(reply) is dict and set(reply) == {"error", "message"}:
                raise ProgramFailed(f"call {calls}: {entry} raised {str(reply['error'])[:80]}: "
                                    f"{str(reply['message'])[:300]}")
        except ProgramFailed:
            raise
        except BaseException as error:
            raise ProgramFailed(f"call {calls}: the program's reply is not a value ({type(error).__name__})")
        raise ProgramFailed(f"call {calls}: the program's reply is not a value")

    try:
        namespace = {"__name__": "__main__"}
        exec(compile(source, "test.py", "exec"), namespace)
        namespace[entry] = candidate  # helpers of the prompt that call the function call the program too
        namespace["check"](candidate)
        if calls == 0:
            raise AssertionError("check() never called the function")
    except BaseException:
        print("judge:", file=sys.stderr)
        traceback.print_exc()
        os._exit(1)
    os.write(verdict_fd, nonce)
    os._exit(0)


main(*map(int, sys.argv[1:4]), sys.argv[4], int(sys.argv[5]))
"""


def _processes_of(uid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def _own_uid_processes(uid: int) -> int:
    return len(_processes_of(uid))


_PROBE = r"""
import ctypes, os, socket
assert os.getpid() == 1
s = socket.socket()
try:
    s.connect(('1.1.1.1', 53))
except OSError:
    pass
else:
    raise SystemExit(5)
if MOUNTS:
    assert sum(e.isdigit() for e in os.listdir('/proc')) <= 2, 'the host processes are visible'
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 6, b'size=1m') == 0, 'no tmpfs'
"""


@functools.lru_cache(maxsize=None)
def _unshare_prefix() -> tuple[tuple[str, ...], frozenset] | None:
    """The unshare command line that works here and the namespaces it makes ("pid", "net", "ipc", "mount"),
    the fullest set first; None when unshare makes none."""
    unshare = shutil.which("unshare") or ("/usr/bin/unshare" if os.path.exists("/usr/bin/unshare") else None)
    if unshare is None:
        return None
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    choices = [(["--pid", "--fork", "--kill-child", "--net", "--ipc", "--mount", "--mount-proc"],
                frozenset({"pid", "net", "ipc", "mount"})),
               (["--pid", "--fork", "--kill-child", "--net"], frozenset({"pid", "net"}))]
    for flags, made in choices:
        prefix = [unshare, *user, *flags]
        try:
            probe = subprocess.run([*prefix, sys.executable, "-I", "-S", "-c",
                                    f"MOUNTS = {'mount' in made}\n" + _PROBE],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return tuple(prefix), made | ({"user"} if user else set())
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
                               timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


# --- a cgroup per run: all its processes' memory together, and one way to kill them all -----------------
_LIMIT_FILE = {"v2": "memory.max", "v1": "memory.limit_in_bytes"}


@functools.lru_cache(maxsize=None)
def _cgroup_parent() -> tuple[str, Path] | None:
    """("v2" or "v1", folder) where this process may make a child cgroup with a memory limit; None if nowhere
    (not root, no memory controller delegated, a read-only cgroup file system)."""
    if os.geteuid() != 0:
        return None
    try:
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        own = [line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().splitlines()]
    except OSError:
        return None
    paths = {}
    for _, controllers, path in (entry for entry in own if len(entry) == 3):
        for controller in controllers.split(",") if controllers else ["<v2>"]:
            paths[controller] = path
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        if tail[0] == "cgroup2" and "<v2>" in paths:
            version, path = "v2", paths["<v2>"]
        elif tail[0] == "cgroup" and "memory" in tail[2].split(",") and "memory" in paths:
            version, path = "v1", paths["memory"]
        else:
            continue
        root = fields[3]
        if not (path + "/").startswith(root.rstrip("/") + "/"):
            continue
        folder = Path(fields[4]) / path[len(root.rstrip("/")):].lstrip("/")
        probe = folder / f"hydralib-sandbox-probe-{os.getpid()}"
        try:
            probe.mkdir()
        except OSError:
            continue
        usable = (probe / _LIMIT_FILE[version]).exists()
        probe.rmdir()
        if usable:
            return version, folder
    return None


def _make_cgroup(name: str, total_memory_bytes: int) -> Path | None:
    found = _cgroup_parent()
    if found is None:
        return None
    version, parent = found
    folder = parent / name
    try:
        folder.mkdir()
        (folder / _LIMIT_FILE[version]).write_text(str(total_memory_bytes))
        swap = folder / ("memory.swap.max" if version == "v2" else "memory.memsw.limit_in_bytes")
        if swap.exists():  # no swapping out of the limit
            swap.write_text("0" if version == "v2" else str(total_memory_bytes))
    except OSError:
        _remove_cgroup(folder)
        return None
    return folder


def _join_cgroup(folder: Path | None) -> None:
    if folder is not None:
        (folder / "cgroup.procs").write_text(str(os.getpid()))


def _remove_cgroup(folder: Path | None) -> None:
    """Kill every process in the cgroup (cgroup.kill where the kernel has it), then remove it."""
    if folder is None or not folder.exists():
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if (folder / "cgroup.kill").exists():
                (folder / "cgroup.kill").write_text("1")
            for pid in (folder / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            folder.rmdir()
            return
        except OSError:
            time.sleep(0.02)  # exiting processes leave the cgroup a moment after the signal


def containment() -> dict:
    """What the sandbox can enforce on this machine (probed once, then cached): a boolean per measure, and
    "not_contained", a list of what is not contained here, in words."""
    found = _unshare_prefix()
    made = found[1] if found else frozenset()
    drop = _can_drop_privileges()
    cgroup = _cgroup_parent() is not None
    held = {"pid_namespace": "pid" in made, "network_namespace": "net" in made, "ipc_namespace": "ipc" in made,
            "mount_namespace": "mount" in made, "private_scratch_space": "mount" in made,
            "unprivileged_user": drop, "process_limit": drop or os.geteuid() != 0,
            "total_memory_limit": cgroup, "kill_all_processes_afterwards": "pid" in made or drop or cgroup,
            "process_group_killed": True, "scrubbed_environment": True, "fresh_directory": True,
            "rlimits": True, "output_capped": True, "user_namespace": "user" in made,
            "verdict_in_a_separate_process": True, "returned_values_checked_by_type": True}
    missing = ["any world-readable file can be read (the repository, the Python installation, /etc)",
               "CPU is used up to the time limit"]
    if not drop:
        missing.append("the program runs as the evaluating user: it can read and change that user's files "
                       "(~/.ssh included)" + ("" if held["pid_namespace"] else " and signal that user's processes"))
    if not held["network_namespace"]:
        missing.append("the network can be reached")
    if not held["kill_all_processes_afterwards"]:
        missing.append("processes that leave the program's session can survive the run")
    if not cgroup:
        missing.append(f"total memory: each process has {MEMORY_BYTES >> 20} MiB of address space, but its "
                       f"processes together are not bounded (no cgroup with a memory controller could be made)")
    if not held["mount_namespace"]:
        missing.append("/tmp, /var/tmp, /dev/shm and /run/lock are the host's: what is written there is not "
                       "bounded in total (/dev/shm takes RAM)"
                       + (" and is removed after the run" if drop else " and can outlive the run"))
        missing.append("the host's processes and their command lines are visible in /proc")
    if not held["ipc_namespace"]:
        missing.append("SysV shared memory, semaphores and queues are the host's"
                       + (" (removed after the run)" if drop else " and can outlive the run"))
    held["not_contained"] = missing
    return held


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


def _limits(memory_bytes: int, cpu_seconds: int, cgroup: Path | None = None) -> None:
    """In the child before exec (applies to unshare, the wrapper and everything it starts)."""
    _join_cgroup(cgroup)
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
    """Kill every process running as the sandbox uid (kill(-1) from a helper with that uid), again until none
    is left: a process forked while one kill went round is caught by the next."""
    true = shutil.which("true", path=_PATH) or "/bin/true"
    deadline = time.monotonic() + 10
    while _processes_of(uid) and time.monotonic() < deadline:
        try:  # preexec_fn runs after the switch to user=uid, and kill(-1) spares the caller
            subprocess.run([true], user=uid, group=uid, extra_groups=[], preexec_fn=_kill_everything_i_can,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.01)  # killed processes take a moment to leave /proc


def _remove_files_of(uid: int) -> None:
    for folder in WORLD_WRITABLE:
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


def _remove_ipc_of(uid: int) -> None:
    """Remove the SysV shared memory segments, semaphore sets and message queues owned by uid."""
    ipcrm = shutil.which("ipcrm", path=_PATH)
    for kind, flag in (("shm", "-m"), ("sem", "-s"), ("msg", "-q")):
        try:
            lines = Path(f"/proc/sysvipc/{kind}").read_text().splitlines()
        except OSError:
            continue
        header = lines[0].split() if lines else []
        if ipcrm is None or "uid" not in header:
            continue
        for line in lines[1:]:
            values = line.split()
            if len(values) == len(header) and values[header.index("uid")] == str(uid):
                id_column = "shmid" if kind == "shm" else "semid" if kind == "sem" else "msqid"
                subprocess.run([ipcrm, flag, values[header.index(id_column)]], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)


def run_program(source: str, entry_point: str, test: str, timeout: float = 5.0, memory_bytes: int = MEMORY_BYTES,
                output_limit: int = OUTPUT_LIMIT, max_processes: int = MAX_PROCESSES,
                total_memory_bytes: int = TOTAL_MEMORY_BYTES) -> Result:
    """Run a program text (which must define ``entry_point``) contained as far as this machine allows, and
    the trusted ``test`` text (which must define ``check(candidate)``) in a separate judge process whose
    calls of the function the program answers; passed only if the judge's nonce arrives after check
    returned. A program that is not valid Unicode text (a lone surrogate) fails without running."""
    start = time.monotonic()
    try:
        program_bytes, test_bytes = source.encode("utf-8"), test.encode("utf-8")
    except UnicodeEncodeError as err:
        return Result(False, "failed", f"not run: the program is not valid Unicode text ({err.reason} at "
                                       f"character {err.start})", time.monotonic() - start)
    found = _unshare_prefix()
    prefix, made = found if found else ((), frozenset())
    uid = _fresh_uid() if _can_drop_privileges() else -1
    if uid >= 0:
        nproc = max_processes
    elif os.geteuid() != 0:  # NPROC counts every process of the user: allow the ones running now
        nproc = _own_uid_processes(os.getuid()) + max_processes
    else:
        nproc = 0
    folder = tempfile.mkdtemp(prefix="hydralib-sandbox-")
    cgroup = _make_cgroup(f"hydralib-sandbox-{os.getpid()}-{secrets.token_hex(4)}", total_memory_bytes)
    pipes: list[int] = []
    program = judge = None
    output, judged = bytearray(), bytearray()
    verdict = b""
    status = "failed"
    try:
        os.chmod(folder, 0o700)
        path = Path(folder) / "program.py"
        path.write_bytes(program_bytes)
        if uid >= 0:
            os.chown(folder, uid, uid)
            os.chown(path, uid, uid)
        nonce = secrets.token_hex(32).encode() + b"\n"
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        verdict_r, verdict_w = os.pipe()
        pipes = [request_r, request_w, reply_r, reply_w, verdict_r, verdict_w]
        cpu = max(1, int(timeout) + 1)
        scratch = SCRATCH_BYTES if "mount" in made else 0
        program = subprocess.Popen(
            [*prefix, sys.executable, "-I", "-u", "-c", _WRAPPER, str(request_r), str(reply_w), entry_point, str(uid),
             str(nproc), str(scratch)],
            cwd=folder, env={"PATH": _PATH, "HOME": folder, "LANG": "C.UTF-8"}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=(request_r, reply_w), start_new_session=True,
            preexec_fn=functools.partial(_limits, memory_bytes, cpu, cgroup))
        judge = subprocess.Popen(
            [sys.executable, "-I", "-c", _JUDGE, str(request_w), str(reply_r), str(verdict_w), entry_point,
             str(REPLY_LIMIT)],
            cwd="/", env={"PATH": _PATH, "LANG": "C.UTF-8"}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, pass_fds=(request_w, reply_r, verdict_w), start_new_session=True,
            preexec_fn=functools.partial(_limits, max(memory_bytes, 4 * REPLY_LIMIT + (256 << 20)), cpu))
        for fd in pipes[:4] + [verdict_w]:  # only the two children hold these now
            os.close(fd)
        pipes = [verdict_r]
        try:
            judge.stdin.write(nonce + test_bytes)
            judge.stdin.close()
        except OSError:
            pass
        streams = {program.stdout.fileno(): ("program", program.stdout), judge.stdout.fileno(): ("judge", judge.stdout),
                   verdict_r: ("verdict", None)}
        selector = selectors.DefaultSelector()
        for fd, (name, _) in streams.items():
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ, name)
        deadline = start + timeout
        while judge.poll() is None or any(key.data != "program" for key in selector.get_map().values()):
            left = deadline - time.monotonic()
            if left <= 0:
                status = "timeout"
                break
            for key, _ in selector.select(timeout=min(left, 0.05)):
                try:
                    chunk = os.read(key.fd, 65536)
                except BlockingIOError:
                    continue
                if key.data == "verdict":
                    verdict = (verdict + chunk)[:len(nonce) + 1]
                else:
                    sink = output if key.data == "program" else judged
                    sink += chunk[:output_limit - len(sink)]
                    if chunk and len(sink) >= output_limit and key.data == "program":
                        selector.unregister(key.fd)
                        program.stdout.close()  # the program gets EPIPE instead of filling memory
                        continue
                if not chunk:
                    selector.unregister(key.fd)
            if judge.poll() is not None and not any(k.data != "program" for k in selector.get_map().values()):
                break
        for fd in [fd for fd, key in selector.get_map().items() if key.data == "program"]:
            try:  # what the program wrote before the judge finished
                output += os.read(fd, 65536)[:output_limit - len(output)]
            except (BlockingIOError, OSError):
                pass
        selector.close()
    finally:
        for process in (program, judge):
            if process is not None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)  # always, not only on timeout
                except (ProcessLookupError, PermissionError):
                    pass
                process.kill()
                process.wait()
                for stream in (process.stdin, process.stdout):
                    if stream and not stream.closed:
                        stream.close()
        _remove_cgroup(cgroup)
        if uid >= 0:
            _kill_uid(uid)
            _remove_files_of(uid)
            _remove_ipc_of(uid)
        for fd in pipes:
            os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
    passed = status != "timeout" and verdict == nonce
    if passed:
        status = "passed"
    account = bytes(judged)[-(output_limit // 4):] if judged and not passed else b""  # why the judge failed it
    shown = bytes(output)[:output_limit - len(account) - 1]
    text = (shown + (b"\n" if shown and account and not shown.endswith(b"\n") else b"") + account)
    return Result(passed=passed, status=status, output=text.decode("utf-8", "replace"),
                  seconds=time.monotonic() - start)


def run_completion(problem: dict, completion: str, timeout: float = 5.0, **limits) -> Result:
    """One HumanEval problem (task_id, prompt, test, entry_point) with one completion."""
    return run_program(build_program(problem, completion), problem["entry_point"], build_judge(problem),
                       timeout=timeout, **limits)
