#!/usr/bin/env python3
"""harness beside other supervisors: the same workloads against harness, supervisord, circus,
honcho and a bare baseline, in one run, printed as a Markdown table.

    python3 benches/peers/run.py            # full run
    python3 benches/peers/run.py --quick    # smoke run: N=50, one round, 5 s idle window
    python3 benches/peers/run.py --only harness

Python 3 standard library only. The peers are installed with pip into a virtualenv under
`target/peers-venv` (created once, reused). harness is taken from `target/release` (build it
with `cargo build --release -p harness-cli -p harnessd`) or `--harness-bin DIR`.

Every process the run starts is found again by the run's temporary directory in its command
line or environment and ended, also on Ctrl-C or failure. See README.md for what each row means.
"""

import argparse
import atexit
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEER_VERSIONS = {"supervisor": "4.3.0", "circus": "0.19.0", "honcho": "2.0.0"}
TOOLS = ["baseline", "harness", "supervisord", "circus", "honcho"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

ROOT = None  # the run's temporary directory: every process started carries it
LIVE = []  # Popen handles of supervisors started in the foreground


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc


def pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def read(path, n=-1):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, n if n > 0 else 1 << 20)
    except OSError:
        return b""
    finally:
        os.close(fd)


def count_marker(prefix):
    """Processes whose argv[0] is `prefix` (bytes ending in NUL). Zombies have no argv."""
    n = 0
    k = len(prefix)
    for pid in pids():
        if read(f"/proc/{pid}/cmdline", k) == prefix:
            n += 1
    return n


def children_map():
    kids = {}
    for pid in pids():
        st = read(f"/proc/{pid}/stat")
        if not st:
            continue
        ppid = int(st[st.rfind(b")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(pid)
    return kids


def supervisor_tree(root, marker):
    """The supervisor process and its descendants that are not services."""
    kids = children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p != root and read(f"/proc/{p}/cmdline", len(marker)) == marker:
            continue
        if p != root and read(f"/proc/{p}/cmdline", 8).startswith(b"/bin/sh\0"):
            # A service's shell wrapper (honcho runs each line with sh -c) counts as the service.
            continue
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pid):
    st = read(f"/proc/{pid}/stat")
    if not st:
        return 0
    f = st[st.rfind(b")") + 2 :].split()
    return int(f[11]) + int(f[12])  # utime + stime


def status_kb(pid, field):
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith(field.encode() + b":"):
            return int(line.split()[1])
    return 0


def pss_kb(pid):
    for line in read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith(b"Pss:"):
            return int(line.split()[1])
    return 0


def sweep():
    """End every process that carries the run's directory (services, supervisors, daemons)."""
    if not ROOT:
        return
    key = ROOT.encode()
    me = os.getpid()
    for sig, pause in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 0.2)):
        hit = []
        for pid in pids():
            if pid == me:
                continue
            if key in read(f"/proc/{pid}/cmdline") or key in read(f"/proc/{pid}/environ"):
                try:
                    os.kill(pid, sig)
                    hit.append(pid)
                except OSError:
                    pass
        for p in LIVE:
            try:
                p.wait(timeout=0.01)
            except Exception:
                pass
        if not hit:
            break
        time.sleep(pause)


def wait_until(cond, timeout, step=0.005):
    """Polls `cond` until it is true; returns the monotonic time it was first seen true, or None."""
    end = time.monotonic() + timeout
    while True:
        if cond():
            return time.monotonic()
        if time.monotonic() > end:
            return None
        time.sleep(step)


# ---------------------------------------------------------------- services


class Svc:
    def __init__(self, name, argv, deps=(), ready_file=None, oneshot=False):
        self.name, self.argv, self.deps = name, argv, list(deps)
        self.ready_file, self.oneshot = ready_file, oneshot


def shell_join(argv):
    return " ".join("'" + a.replace("'", "'\\''") + "'" if re.search(r"[^\w@%+=:,./-]", a) else a for a in argv)


def popen(argv, cwd, out=subprocess.DEVNULL, env=None):
    return subprocess.Popen(
        argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT if out != subprocess.DEVNULL else subprocess.DEVNULL,
        env=env, start_new_session=True,
    )


def quiet(argv, d, timeout=None):
    subprocess.run(argv, cwd=d, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)


class Peer:
    """A supervisor run in the foreground as this script's child, its log files in the work dir."""

    def __init__(self, ctx):
        self.ctx = ctx

    def launch(self, d, argv, out):
        t0 = time.monotonic()
        self.proc = popen([self.ctx.venv_bin(argv[0]), *argv[1:]], d, out=open(os.path.join(d, out), "wb"))
        LIVE.append(self.proc)
        return t0

    def teardown(self, d):
        stop_proc(self.proc)

    def daemon(self, d):
        return self.proc.pid

    def log_file(self, d, svc):
        return os.path.join(d, f"{svc}.log")


class Baseline:
    name = "baseline"

    def __init__(self, ctx):
        self.ctx = ctx

    def up(self, d, services):
        t0 = time.monotonic()
        self.kids = []
        for s in services:
            self.kids.append(os.posix_spawn(s.argv[0], s.argv, os.environ))
        return t0

    def stop(self, d):
        t0 = time.monotonic()
        for p in self.kids:
            os.kill(p, signal.SIGTERM)
        for p in self.kids:
            os.waitpid(p, 0)
        self.kids = []
        return t0

    def teardown(self, d):
        for p in getattr(self, "kids", []):
            try:
                os.kill(p, signal.SIGKILL)
                os.waitpid(p, 0)
            except OSError:
                pass
        self.kids = []


class Harness:
    name = "harness"

    def __init__(self, ctx):
        self.ctx = ctx
        self.cli = os.path.join(ctx.harness_bin, "harness")

    def cmd(self, d, *args):
        return [self.cli, "--state-dir", os.path.join(d, "state"), "-f", os.path.join(d, "services.yaml"), *args]

    def write(self, d, services):
        lines = ["name: peers", "services:"]
        for s in services:
            lines.append(f"  {s.name}:")
            lines.append(f"    binary: {json.dumps(s.argv[0])}")
            lines.append(f"    args: {json.dumps(s.argv[1:])}")
            if s.oneshot:
                lines.append("    job: true")
            if s.ready_file:
                lines.append("    readiness:")
                lines.append(f"      command: {json.dumps('test -f ' + s.ready_file)}")
                lines.append("      interval: 1s")
                lines.append("      start_interval: 10ms")
            if s.deps:
                lines.append("    dependencies:")
                for dep in s.deps:
                    lines.append(f"      {dep}: {{condition: healthy}}")
        with open(os.path.join(d, "services.yaml"), "w") as f:
            f.write("\n".join(lines) + "\n")

    def up(self, d, services, wait=True):
        self.write(d, services)
        args = ["up", "-d", "--quiet"] + (["--wait", "--timeout", "600s"] if wait else [])
        t0 = time.monotonic()
        self.proc = popen(self.cmd(d, *args), d, out=open(os.path.join(d, "up.out"), "wb"))
        return t0

    def stop(self, d):
        self.proc.wait()
        t0 = time.monotonic()
        quiet(self.cmd(d, "down"), d)
        return t0

    def teardown(self, d):
        for args in (("down",), ("daemon", "stop")):
            quiet(self.cmd(d, *args), d, timeout=120)

    def daemon(self, d):
        state = os.path.join(d, "state").encode()
        for pid in pids():
            cmd = read(f"/proc/{pid}/cmdline")
            if b"harnessd" in cmd.split(b"\0")[0] and (state in cmd or state in read(f"/proc/{pid}/environ")):
                return pid
        return None

    def log_file(self, d, svc):
        return os.path.join(d, "state", "logs", "peers", svc, "stdout.log")


class Supervisord(Peer):
    name = "supervisord"

    def conf(self, d):
        return os.path.join(d, "supervisord.conf")

    def up(self, d, services, wait=True):
        os.makedirs(os.path.join(d, "childlogs"), exist_ok=True)
        c = [
            "[unix_http_server]", f"file={d}/supervisor.sock",
            "[supervisord]", "nodaemon=true", f"logfile={d}/supervisord.log", f"pidfile={d}/supervisord.pid",
            f"childlogdir={d}/childlogs",
            # 500 programs hold 3 pipes each; supervisord raises its descriptor limit to this.
            "minfds=8192",
            "[rpcinterface:supervisor]", "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "[supervisorctl]", f"serverurl=unix://{d}/supervisor.sock",
        ]
        for s in services:
            c += [f"[program:{s.name}]", "command=" + shell_join(s.argv).replace("%", "%%")]  # % expands
            if s.oneshot:
                c += ["autorestart=false", "startsecs=0", f"stdout_logfile={d}/{s.name}.log"]
        with open(self.conf(d), "w") as f:
            f.write("\n".join(c) + "\n")
        return self.launch(d, ["supervisord", "-c", self.conf(d)], "supervisord.out")

    def stop(self, d):
        t0 = time.monotonic()
        quiet([self.ctx.venv_bin("supervisorctl"), "-c", self.conf(d), "stop", "all"], d)
        return t0


class Circus(Peer):
    name = "circus"

    def endpoint(self, d):
        return f"ipc://{d}/circus-ctl.sock"

    def up(self, d, services, wait=True):
        c = [
            "[circus]", f"endpoint = {self.endpoint(d)}", f"pubsub_endpoint = ipc://{d}/circus-pub.sock",
            f"stats_endpoint = ipc://{d}/circus-stats.sock", f"logoutput = {d}/circusd.log",
        ]
        for s in services:
            c += [f"[watcher:{s.name}]", f"cmd = {shell_join(s.argv)}", "numprocesses = 1"]
            if s.oneshot:
                c += ["respawn = False", "stdout_stream.class = FileStream", f"stdout_stream.filename = {d}/{s.name}.log"]
        ini = os.path.join(d, "circus.ini")
        with open(ini, "w") as f:
            f.write("\n".join(c) + "\n")
        return self.launch(d, ["circusd", ini], "circusd.out")

    def ctl(self, d, *args, timeout=None):
        quiet([self.ctx.venv_bin("circusctl"), "--endpoint", self.endpoint(d), "--timeout", "600", *args], d, timeout)

    def stop(self, d):
        t0 = time.monotonic()
        self.ctl(d, "stop")
        return t0

    def teardown(self, d):
        self.ctl(d, "quit", timeout=120)
        stop_proc(self.proc)


class Honcho(Peer):
    name = "honcho"

    def up(self, d, services, wait=True):
        with open(os.path.join(d, "Procfile"), "w") as f:
            for s in services:
                f.write(f"{s.name}: {shell_join(s.argv)}\n")
        return self.launch(d, ["honcho", "-f", os.path.join(d, "Procfile"), "-d", d, "start"], "honcho.out")

    def stop(self, d):
        # honcho notes each start asynchronously; a SIGTERM before it has noted them all makes it
        # fail with a KeyError and leave the rest running, so stop once it has said all started.
        n = count_marker(self.ctx.marker)
        out = os.path.join(d, "honcho.out")
        wait_until(lambda: count_lines_with(out, b"started (pid=") >= n, 600, step=0.05)
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return t0

    def log_file(self, d, svc):
        return os.path.join(d, "honcho.out")  # honcho's own output, each line prefixed


def stop_proc(p, timeout=15):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ---------------------------------------------------------------- workloads


class Ctx:
    def __init__(self, args):
        self.args = args
        self.harness_bin = args.harness_bin
        self.venv = args.venv
        self.bin = os.path.join(ROOT, "bin")
        os.makedirs(self.bin)
        # Services run through links whose path is unique to this run: argv[0] marks them.
        for name, target in (("pbsleep", "sleep"), ("pbseq", "seq")):
            os.symlink(shutil.which(target), os.path.join(self.bin, name))
        self.sleep = os.path.join(self.bin, "pbsleep")
        self.seq = os.path.join(self.bin, "pbseq")
        self.marker = (self.sleep + "\0").encode()
        self.seq_marker = (self.seq + "\0").encode()
        self.n = 0

    def venv_bin(self, name):
        return os.path.join(self.venv, "bin", name)

    def workdir(self, tool, what):
        self.n += 1
        d = os.path.join(ROOT, f"{self.n:03d}-{tool}-{what}")
        os.makedirs(d)
        return d


def start_stop(ctx, tool, n, idle):
    """start N / stop N; with `idle`, the supervisor's CPU and memory over that window between."""
    d = ctx.workdir(tool.name, "start")
    services = [Svc(f"s{i}", [ctx.sleep, "3600"]) for i in range(n)]
    out = {}
    try:
        t0 = tool.up(d, services)
        t1 = wait_until(lambda: count_marker(ctx.marker) >= n, 600)
        if t1 is None:
            raise RuntimeError(f"{tool.name}: {count_marker(ctx.marker)}/{n} started within 600 s")
        out["start"] = t1 - t0
        if idle and tool.name != "baseline":
            if tool.name == "harness":
                tool.proc.wait()  # `up --wait` has returned: the daemon is idle from here on
            time.sleep(3)
            root = tool.daemon(d)
            tree = supervisor_tree(root, ctx.marker)
            c0 = sum(cpu_ticks(p) for p in tree)
            w0 = time.monotonic()
            time.sleep(idle)
            tree = supervisor_tree(root, ctx.marker)
            c1 = sum(cpu_ticks(p) for p in tree)
            out["cpu"] = (c1 - c0) / CLK_TCK / (time.monotonic() - w0) * 100
            out["rss"] = sum(status_kb(p, "VmRSS") for p in tree) / 1024
            out["pss"] = sum(pss_kb(p) for p in tree) / 1024
            out["procs"] = len(tree)
            out["threads"] = sum(status_kb(p, "Threads") for p in tree)
        t2 = tool.stop(d)
        t3 = wait_until(lambda: count_marker(ctx.marker) == 0, 600)
        if t3 is None:
            raise RuntimeError(f"{tool.name}: {count_marker(ctx.marker)} still running 600 s after stop")
        out["stop"] = t3 - t2
    finally:
        tool.teardown(d)
        sweep_dir(d)
    return out


def layers(ctx, tool):
    d = ctx.workdir(tool.name, "layers")
    services, last = [], []
    for layer in range(10):
        for i in range(5):
            name = f"l{layer}s{i}"
            ready = os.path.join(d, f"ready-{name}")
            script = f"sleep 0.1; touch {ready}; exec {ctx.sleep} 3600"
            deps = [f"l{layer - 1}s{j}" for j in range(5)] if layer else []
            services.append(Svc(name, ["/bin/sh", "-c", script], deps=deps, ready_file=ready))
            if layer == 9:
                last.append(ready)
    try:
        if tool.name == "baseline":
            # Each layer spawned once the previous one's files exist, checked every 10 ms.
            t0 = time.monotonic()
            tool.kids = []
            for layer in range(10):
                group = services[layer * 5 : layer * 5 + 5]
                for s in group:
                    tool.kids.append(os.posix_spawn(s.argv[0], s.argv, os.environ))
                while not all(os.path.exists(s.ready_file) for s in group):
                    time.sleep(0.01)
            return time.monotonic() - t0
        t0 = tool.up(d, services)
        t1 = wait_until(lambda: all(os.path.exists(p) for p in last), 300)
        if t1 is None:
            raise RuntimeError(f"{tool.name}: layers not ready within 300 s")
        return t1 - t0
    finally:
        tool.teardown(d)
        sweep_dir(d)


def last_line_is(path, want):
    """Whether `path` holds a line ending in `want` (the last number seq prints) near its end."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError:
        return False
    return re.search(rb"(^|[^0-9])" + want + rb"\r?$", tail, re.M) is not None


def count_lines_with(path, what=b"\n"):
    n = 0
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return n
            n += b.count(what)


def log_throughput(ctx, tool, lines):
    d = ctx.workdir(tool.name, "log")
    want = str(lines).encode()
    try:
        if tool.name == "baseline":
            path = os.path.join(d, "seq.out")
            t0 = time.monotonic()
            with open(path, "wb") as f:
                subprocess.run([ctx.seq, str(lines)], stdout=f)
            took = time.monotonic() - t0
        else:
            svc = Svc("log", [ctx.seq, str(lines)], oneshot=True)
            path = tool.log_file(d, "log")
            t0 = tool.up(d, [svc], wait=False)
            t1 = wait_until(lambda: last_line_is(path, want), 600, step=0.01)
            if t1 is None:
                raise RuntimeError(f"{tool.name}: the last line not in {path} within 600 s")
            took = t1 - t0
        got = count_lines_with(path)
        if got < lines:
            raise RuntimeError(f"{tool.name}: {got} of {lines} lines in the log")
        return took
    finally:
        tool.teardown(d)
        sweep_dir(d)


def crash_restart(ctx, tool):
    d = ctx.workdir(tool.name, "crash")
    stamps = os.path.join(d, "stamps")
    script = f"echo start $(date +%s%N) >> {stamps}; echo end $(date +%s%N) >> {stamps}; exit 1"
    argv = ["/bin/sh", "-c", script]

    def runs():
        try:
            with open(stamps) as f:
                return [l.split() for l in f if l.strip()]
        except OSError:
            return []

    try:
        if tool.name == "baseline":
            for _ in range(2):
                os.waitpid(os.posix_spawn(argv[0], argv, os.environ), 0)
        else:
            tool.up(d, [Svc("crash", argv)], wait=False)
            if wait_until(lambda: sum(1 for r in runs() if r[0] == "start") >= 2, 120, step=0.02) is None:
                raise RuntimeError(f"{tool.name}: no restart within 120 s")
        r = runs()
        end1 = next(int(v) for k, v in r if k == "end")
        start2 = [int(v) for k, v in r if k == "start"][1]
        return (start2 - end1) / 1e9
    finally:
        tool.teardown(d)
        sweep_dir(d)


def sweep_dir(d):
    """Ends anything left from one measurement and frees its disk space."""
    key = d.encode()
    for pid in pids():
        if pid != os.getpid() and (key in read(f"/proc/{pid}/cmdline") or key in read(f"/proc/{pid}/environ")):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- setup and report


def ensure_venv(venv):
    """Creates the virtualenv with the pinned peers once; reuses it when they are there."""
    want = [f"{k}=={v}" for k, v in PEER_VERSIONS.items()]
    marker = os.path.join(venv, "peers-installed.txt")
    try:
        with open(marker) as f:
            if f.read().split() == want:
                return
    except OSError:
        pass
    log(f"installing {' '.join(want)} into {os.path.relpath(venv, REPO)}")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([os.path.join(venv, "bin", "pip"), "install", "--quiet", "--disable-pip-version-check", *want], check=True)
    with open(marker, "w") as f:
        f.write("\n".join(want) + "\n")


def fmt_ms(v, base=None):
    if v is None:
        return "-"
    s = f"{v * 1000:,.0f} ms" if v >= 0.01 else f"{v * 1000:.1f} ms"
    if base:
        s += f" ({v / base:.2f}x)"
    return s


def main():
    global ROOT
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N=50, one round, 5 s idle window, 100,000 log lines")
    ap.add_argument("--only", default=None, help="comma-separated tools to run (the baseline always runs): harness,supervisord,circus,honcho")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("-n", type=int, default=None, help="services for start/stop/idle (default 500)")
    ap.add_argument("--idle", type=float, default=None, help="idle window in seconds (default 30)")
    ap.add_argument("--harness-bin", default=os.path.join(REPO, "target", "release"))
    ap.add_argument("--venv", default=os.path.join(REPO, "target", "peers-venv"))
    ap.add_argument("--json", default=None, help="also write every measurement to this file")
    args = ap.parse_args()
    n = args.n or (50 if args.quick else 500)
    rounds = args.rounds or (1 if args.quick else 3)
    idle = args.idle or (5.0 if args.quick else 30.0)
    lines = 100_000 if args.quick else 1_000_000
    tools = TOOLS if not args.only else ["baseline"] + [t for t in args.only.split(",") if t in TOOLS and t != "baseline"]
    if any(t in tools for t in ("supervisord", "circus", "honcho")):
        ensure_venv(args.venv)
    if "harness" in tools and not os.access(os.path.join(args.harness_bin, "harness"), os.X_OK):
        sys.exit(f"no harness in {args.harness_bin}: cargo build --release -p harness-cli -p harnessd")

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))

    ROOT = tempfile.mkdtemp(prefix="harness-peers-")
    atexit.register(lambda: (sweep(), shutil.rmtree(ROOT, ignore_errors=True)))
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ctx = Ctx(args)
    impl = {"baseline": Baseline, "harness": Harness, "supervisord": Supervisord, "circus": Circus, "honcho": Honcho}
    objs = {t: impl[t](ctx) for t in tools}
    res = {t: {} for t in tools}
    notes = {t: {} for t in tools}

    def rec(t, key, v):
        res[t].setdefault(key, []).append(v)

    def attempt(t, key, fn):
        try:
            return fn()
        except Exception as e:  # one tool failing a workload does not end the run
            log(f"  {t} {key}: {e}")
            notes[t][key] = "failed"
            return None

    try:
        for r in range(rounds):
            for t in tools:  # interleaved: each round runs every tool once
                log(f"round {r + 1}/{rounds}: {t} start/stop {n}" + (f" + idle {idle:.0f} s" if r == 0 else ""))
                out = attempt(t, "start", lambda: start_stop(ctx, objs[t], n, idle if r == 0 else 0))
                for k, v in (out or {}).items():
                    rec(t, k, v)
                log(f"    {out}")
                if t in ("baseline", "harness"):
                    v = attempt(t, "layers", lambda: layers(ctx, objs[t]))
                    if v is not None:
                        rec(t, "layers", v)
                        log(f"    layers {v:.3f}")
                v = attempt(t, "log", lambda: log_throughput(ctx, objs[t], lines))
                if v is not None:
                    rec(t, "log", v)
                    log(f"    log {v:.3f}")
                if t != "honcho":
                    v = attempt(t, "crash", lambda: crash_restart(ctx, objs[t]))
                    if v is not None:
                        rec(t, "crash", v)
                        log(f"    crash {v:.4f}")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        sweep()
        sys.exit(130)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": n, "rounds": rounds, "idle_s": idle, "lines": lines, "results": res}, f, indent=1)

    def med(t, k):
        v = res[t].get(k)
        return statistics.median(v) if v else None

    def cell(t, k, base=True):
        if k in notes[t] and not res[t].get(k):
            return notes[t][k]
        b = med("baseline", k) if base and t != "baseline" else None
        return fmt_ms(med(t, k), b)

    na_deps = "n/a (no dependencies)"
    rows = [
        (f"start {n} `sleep` until all exist", {t: cell(t, "start") for t in tools}),
        (f"stop {n} until none exists", {t: cell(t, "stop") for t in tools}),
        ("10 layers x 5, each ready 100 ms after start (ideal 1,000 ms)",
         {t: (cell(t, "layers") if t in ("baseline", "harness") else na_deps) for t in tools}),
        (f"idle CPU, {n} services, {idle:.0f} s window (first round)",
         {t: ("-" if t == "baseline" else (f"{med(t, 'cpu'):.2f}% of a core" if med(t, "cpu") is not None else notes[t].get("start", "-"))) for t in tools}),
        (f"idle RSS (PSS), {n} services (first round)",
         {t: ("-" if t == "baseline" else (f"{med(t, 'rss'):.1f} MiB ({med(t, 'pss'):.1f} MiB)" + (f" in {med(t, 'procs'):.0f} processes" if (med(t, 'procs') or 0) > 1 else "") if med(t, "rss") is not None else "-")) for t in tools}),
        (f"{lines:,} lines into the service's log file", {t: cell(t, "log") for t in tools}),
        ("crash: first exit to first restart (default backoff)",
         {t: ("n/a (no restarts)" if t == "honcho" else cell(t, "crash", base=False)) for t in tools}),
    ]
    print(f"| workload ({'median of ' + str(rounds) if rounds > 1 else 'one round'}) | " + " | ".join(tools) + " |")
    print("|---|" + "---|" * len(tools))
    for label, cells in rows:
        print(f"| {label} | " + " | ".join(cells[t] for t in tools) + " |")


if __name__ == "__main__":
    main()
