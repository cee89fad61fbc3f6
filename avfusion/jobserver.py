"""A warm process for the DAG's local jobs: torch imported once, one forked child per job.

Each job of the DAG is its own process (`python -m avfusion.jobconfig ...`), and importing torch,
torch._dynamo (which every optimizer step imports) and the libraries the tasks use costs ~3 CPU-s per
process: ~600 CPU-s over the tiny DAG's 203 jobs, 5 minutes of its hour on 2 cores. With `--warm`
(the DAG's local jobs, `job_server: true`) the job process hands its job to this server instead:

- The first job starts the server (`python .../jobserver.py serve SOCKET`, its own session); it
  imports the third-party modules of PRELOAD (never avfusion's own modules, so a job always runs
  the code in the tree) and listens on a Unix socket named after this Python, this package folder
  and the job's environment (another venv, checkout or environment gets another server).
- For each job it forks a child with the job's working folder, environment, sys.path, arguments
  and the job's stdin / stdout / stderr (passed over the socket), which runs avfusion.jobconfig's
  main as the job process would; the job process waits for the child's exit code and exits with it.
  A signal to the job process (Snakemake stopping a job) is passed on to the child; a child whose
  job process is gone (killed) stops itself. The job's run folder, log, resume and metrics.json are
  the job process's: nothing else changes (same numbers: each job seeds its own generators).
- The child's CPU seconds (provenance.usage in metrics.json) start at the fork: the imports are
  paid once by the server, which exits once no job of it has run for IDLE_S.
Only jobs that run in one process on one core (`--executor debug --cpus 1`) use the server, and
anything that fails on the way (no socket, a server that does not start) runs the job in the job
process itself, as before.
"""
from __future__ import annotations

import array
import fcntl
import hashlib
import importlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# imported once by the server; never avfusion's own modules (a child imports those from the tree)
PRELOAD = ("torch", "torch._dynamo", "torch.nn.functional", "torch.utils.data", "numpy", "scipy.signal",
           "scipy.optimize", "scipy.stats", "yaml", "submitit", "PIL.Image", "av")
IDLE_S = 60.0          # the server exits once no job has run for this long
START_TIMEOUT_S = 120.0
# environment variables that differ between job processes of one run and do not matter to a job
VOLATILE_ENV = ("PWD", "OLDPWD", "_", "SHLVL")
PACKAGE = Path(__file__).resolve().parent


def _env_key(env: dict) -> str:
    kept = sorted((k, v) for k, v in env.items() if k not in VOLATILE_ENV)
    return json.dumps(kept)


def socket_path(env: dict | None = None) -> Path:
    """The server's socket for this Python, this avfusion folder and this environment."""
    env = dict(os.environ) if env is None else env
    key = hashlib.sha256(f"{sys.executable}\0{PACKAGE}\0{os.getuid()}\0{_env_key(env)}".encode()).hexdigest()[:16]
    name = f"avfusion-jobserver-{key}.sock"
    folder = Path(tempfile.gettempdir())
    if len(str(folder / name)) > 100:   # a Unix socket's path has at most 107 bytes
        folder = Path("/tmp")
    return folder / name


def _send(conn: socket.socket, obj: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(obj).encode()
    payload = struct.pack("!I", len(data)) + data
    if fds:
        conn.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        conn.sendall(payload)


def _recv(conn: socket.socket, with_fds: int = 0) -> tuple[dict | None, list[int]]:
    """One message (and up to `with_fds` file descriptors); (None, []) when the peer closed."""
    fds: list[int] = []
    if with_fds:
        msg, fds, _flags, _addr = socket.recv_fds(conn, 4, with_fds)
        head = msg
    else:
        head = conn.recv(4)
    while head and len(head) < 4:
        more = conn.recv(4 - len(head))
        if not more:
            return None, fds
        head += more
    if len(head) < 4:
        return None, fds
    (size,) = struct.unpack("!I", head)
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            return None, fds
        data += more
    return json.loads(data), fds


# ----------------------------------------------------------------------------- the job process
def _connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
        return conn
    except OSError:
        conn.close()
        return None


def _server_connection(path: Path) -> socket.socket | None:
    """A connection to the warm server, starting it first if none listens (one starter at a time)."""
    conn = _connect(path)
    if conn is not None:
        return conn
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(path)
        if conn is not None:
            return conn
        server = subprocess.Popen([sys.executable, str(PACKAGE / "jobserver.py"), "serve", str(path)],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True, close_fds=True)
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline and server.poll() is None:
            conn = _connect(path)
            if conn is not None:
                return conn
            time.sleep(0.05)
    return None


def run_warm(module: str, argv: list[str]) -> int | None:
    """Run `module.main(argv)` (e.g. avfusion.jobconfig's) in a child of the warm server, as `python -m module
    argv` would; its exit code, or None when no server could take the job (the caller then runs it itself).
    The module is named by the caller, so this server imports none of avfusion's job modules itself."""
    path = socket_path()
    try:
        conn = _server_connection(path)
    except OSError:
        conn = None
    if conn is None:
        return None
    request = {"module": module, "argv": list(argv), "cwd": os.getcwd(), "env": dict(os.environ), "path": list(sys.path)}
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        _send(conn, request, [0, 1, 2])
        started, _ = _recv(conn)
    except OSError:
        started = None
    if not started or "pid" not in started:
        conn.close()
        return None
    child = int(started["pid"])
    forwarded: list[int] = []

    def forward(signum, _frame):
        forwarded.append(signum)
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    try:
        done, _ = _recv(conn)
    except OSError:
        done = None
    conn.close()
    if not done or "code" not in done:
        print(f"error: the job's process {child} ended without an exit code (killed?)", file=sys.stderr)
        return 128 + forwarded[0] if forwarded else 1
    return int(done["code"])


# ----------------------------------------------------------------------------- the server
def _child(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the job process and run the job; never returns."""
    code = 1
    try:
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(signum, signal.SIG_DFL if signum != signal.SIGINT else signal.default_int_handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in any Python process
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        _send(conn, {"pid": os.getpid()})

        def watch():  # the job process is gone (killed): stop the job too
            try:
                while conn.recv(1):
                    pass
            except OSError:
                pass
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
        module = importlib.import_module(request["module"])   # from the job's sys.path, as `python -m` would
        sys.argv = [str(module.__file__), *request["argv"]]
        code = int(module.main(request["argv"]) or 0)
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
    except BaseException:  # the job's traceback goes to its log, as in the job process
        import traceback

        traceback.print_exc()
        code = 1
    try:
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        _send(conn, {"code": code})
    except BaseException:
        pass
    os._exit(code)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)   # children are reaped by the kernel (SIGCHLD ignored): a finished one is gone
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def serve(path: Path, idle_s: float = IDLE_S) -> None:
    """Preload, listen on `path`, fork one child per job; exit after `idle_s` without a job."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"   # the only jobs served: --cpus 1
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # children are reaped by the kernel
    tmp = path.with_name(f"{path.name}.{os.getpid()}")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    listener.listen(64)
    inode = os.stat(tmp).st_ino
    os.replace(tmp, path)                            # connectable = warm
    listener.settimeout(min(idle_s, 5.0))
    children: set[int] = set()
    last_busy = time.monotonic()
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                children = {pid for pid in children if _alive(pid)}
                if children:
                    last_busy = time.monotonic()
                elif time.monotonic() - last_busy > idle_s:   # no job running and none started for idle_s
                    break
                continue
            last_busy = time.monotonic()
            conn.settimeout(None)
            try:
                request, fds = _recv(conn, with_fds=3)
            except OSError:
                conn.close()
                continue
            if request is None or len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                _child(conn, request, fds)
            children.add(pid)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        try:
            if os.stat(path).st_ino == inode:        # still ours (not a newer server's)
                os.unlink(path)
        except OSError:
            pass
        listener.close()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        # started as a script (not -m): avfusion itself stays unimported here, so every child imports
        # the package from the tree as it is when its job starts
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != PACKAGE]
        serve(Path(sys.argv[2]))
    else:
        sys.exit("usage: python avfusion/jobserver.py serve SOCKET")
