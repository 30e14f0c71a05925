#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

There is no kubelet and no scheduler: Pods stay Pending unless a test plays the kubelet by
patching their ``/status``. The binaries come from Debian packages only (see
``docs/kubernetes.md``, "What runs against a real API server"):

* ``build``: fetch the ``kubernetes`` source package (v1.20.2, the newest Debian has with the
  apiserver code), Go 1.19, etcd 3.4 and rsync with ``apt-get download``/``apt-get source``
  into a private root (nothing is installed system-wide), fix the vendored reflect2, generate
  the OpenAPI file, build the two binaries, and cache them outside the clone. A cached build is
  reused; a fresh one takes about 7 minutes of both cores.
* ``start DIR``: start the three processes with their data, logs, PIDs and a kubeconfig in
  DIR, and wait until the controllers are up (about 10 s).
* ``stop DIR``: stop what ``start`` started, by the PIDs it wrote.

The apt mirror is the machine's own: read from ``/etc/apt/sources.list(.d)``, never written here.
Standard library only, so that it runs before the project is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ControlPlane", "ControlPlaneError", "bin_dir", "build", "cache_dir", "private_sources", "start", "stop"]

KUBE_VERSION = "v1.20.2"
# The Debian source package that still carries the apiserver; later releases ship kubectl only.
SOURCE_PACKAGE = "kubernetes"
SUITES = ("bookworm", "bookworm-security")
# Unpacked into a private root with dpkg-deb, never installed.
BINARY_PACKAGES = (
    "etcd-server",
    "golang-1.19-go",
    "golang-1.19-src",
    "rsync",  # the kubernetes Makefile's gen_openapi copies with it
    "libpopt0",  # rsync's one library not in a base system
    "golang-github-modern-go-reflect2-dev",  # 1.0.2: the vendored 1.0.1 segfaults under Go >= 1.18
)
GOROOT_IN_ROOT = "usr/lib/go-1.19"
REFLECT2_IN_ROOT = "usr/share/gocode/src/github.com/modern-go/reflect2"
BINARIES = ("kube-apiserver", "kube-controller-manager", "etcd")
# Controllers that need nodes or a cloud; the Job, garbage-collector, ServiceAccount and token
# controllers stay on.
CONTROLLERS = "*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-expander,-cloud-node-lifecycle"
SERVICE_CIDR = "10.96.0.0/16"
ADMIN_USER = "musetalk-test-admin"
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
POLL_S = 0.2
SETPRIV = "setpriv"  # util-linux, an essential package on Debian
APT_ETC = Path("/etc/apt")


class ControlPlaneError(RuntimeError):
    """The control plane could not be built or started; the message says which step and why."""


def cache_dir() -> Path:
    """Where the built binaries live: ``$MUSETALK_K8S_CACHE``, else the user's cache folder."""
    if os.environ.get("MUSETALK_K8S_CACHE"):
        return Path(os.environ["MUSETALK_K8S_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "musetalk-k8s"


def bin_dir() -> Path:
    return cache_dir() / KUBE_VERSION / "bin"


def _log(message: str) -> None:
    print(f"[k8s-control-plane] {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None, log: Path | None = None) -> None:
    """Run one build step; on failure raise with the tail of its output."""
    _log("$ " + " ".join(cmd))
    with open(log, "ab") if log else contextlib.nullcontext(subprocess.DEVNULL) as out:
        done = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if log else None)
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-4000:] if log else ""
        raise ControlPlaneError(f"{' '.join(cmd[:3])} failed with rc {done.returncode}\n{tail}")


# --- 1. apt: a private sources list on the machine's own mirror --------------------------------


def _system_sources(etc: Path = APT_ETC) -> list[dict]:
    """Each enabled ``deb`` entry of the machine's apt sources: {uris, suites, components, signed_by}."""
    entries = []
    for path in sorted(glob.glob(f"{etc}/sources.list.d/*.sources")):
        for block in Path(path).read_text().split("\n\n"):
            fields = {}
            for line in block.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                entries.append({
                    "uris": fields.get("uris", "").split(),
                    "suites": fields.get("suites", "").split(),
                    "components": fields.get("components", "").split(),
                    "signed_by": fields.get("signed-by", ""),
                })
    for path in [f"{etc}/sources.list", *sorted(glob.glob(f"{etc}/sources.list.d/*.list"))]:
        if not os.path.exists(path):
            continue
        for line in Path(path).read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            signed_by = ""
            if words and words[0].startswith("["):
                options = []
                while words:
                    options.append(words.pop(0))
                    if options[-1].endswith("]"):
                        break
                for option in " ".join(options).strip("[]").split():
                    if option.startswith("signed-by="):
                        signed_by = option.split("=", 1)[1]
            if len(words) >= 2:
                entries.append({"uris": [words[0]], "suites": [words[1]], "components": words[2:],
                                "signed_by": signed_by})
    return entries


def private_sources(etc: Path = APT_ETC) -> str:
    """deb + deb-src entries for bookworm and bookworm-security main, on the machine's mirrors."""
    blocks = []
    entries = _system_sources(etc)
    for entry in entries:
        suites = [s for s in entry["suites"] if s in SUITES]
        if not suites or "main" not in entry["components"]:
            continue
        block = [
            "Types: deb deb-src",
            "URIs: " + " ".join(entry["uris"]),
            "Suites: " + " ".join(suites),
            "Components: main",
        ]
        if entry["signed_by"]:
            block.append("Signed-By: " + entry["signed_by"])
        blocks.append("\n".join(block))
    found = {s for entry in entries for s in entry["suites"] if "main" in entry["components"]}
    missing = [s for s in SUITES if s not in found]
    if missing:
        raise ControlPlaneError(f"the machine's apt sources have no 'main' entry for {missing}")
    return "\n\n".join(blocks) + "\n"


def _apt_options(apt: Path) -> list[str]:
    # deb822 entries must sit in a parts folder as *.sources; the system's lists are left alone.
    options = [
        "-o", "Dir::Etc::SourceList=/dev/null",
        "-o", f"Dir::Etc::SourceParts={apt / 'sources.list.d'}",
        "-o", f"Dir::State::Lists={apt / 'lists'}",
        "-o", f"Dir::Cache={apt / 'cache'}",
        "-q",
    ]
    if os.geteuid() == 0:
        options += ["-o", "APT::Sandbox::User=root"]  # the private folders are root's; no drop to _apt
    return options


def _fetch(work: Path, log: Path) -> Path:
    """Download and unpack the packages and the source; return the kubernetes source tree."""
    apt = work / "apt"
    for sub in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list.d" / "musetalk-k8s.sources").write_text(private_sources())
    options = _apt_options(apt)
    _run(["apt-get", *options, "update"], log=log)

    debs = work / "debs"
    debs.mkdir(exist_ok=True)
    _run(["apt-get", *options, "download", *BINARY_PACKAGES], cwd=debs, log=log)
    root = work / "root"
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(root)], log=log)

    source = work / "source"
    source.mkdir(exist_ok=True)
    _run(["apt-get", *options, "source", "--download-only", SOURCE_PACKAGE], cwd=source, log=log)
    tarballs = sorted(source.glob(f"{SOURCE_PACKAGE}_*.orig.tar.gz"))
    if not tarballs:
        raise ControlPlaneError(f"apt-get source gave no {SOURCE_PACKAGE}_*.orig.tar.gz")
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir()
    with tarfile.open(tarballs[-1]) as tar:
        tar.extractall(tree, filter="tar")
    tops = [p for p in tree.iterdir() if p.is_dir()]
    return tops[0] if len(tops) == 1 and not (tree / "Makefile").exists() else tree


# --- 2. build --------------------------------------------------------------------------------


def _fix_reflect2(tree: Path, root: Path) -> None:
    """Swap the vendored reflect2 1.0.1 (segfaults on Go >= 1.18) for Debian's 1.0.2."""
    vendored = tree / "vendor/github.com/modern-go/reflect2"
    fixed = root / REFLECT2_IN_ROOT
    if not fixed.is_dir():
        raise ControlPlaneError(f"no reflect2 sources at {fixed}")
    for old in [*vendored.glob("*.go"), *vendored.glob("*.s")]:
        old.unlink()
    for new in [*fixed.glob("*.go"), *fixed.glob("*.s")]:
        if not new.name.endswith("_test.go"):
            shutil.copy(new, vendored / new.name)


def _ldflags() -> str:
    major, minor = KUBE_VERSION.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": KUBE_VERSION,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    packages = [
        "k8s.io/kubernetes/pkg/version",
        "k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version",
        "k8s.io/kubernetes/vendor/k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
        "k8s.io/component-base/version",
    ]
    flags = [f"-X {pkg}.{key}={val}" for pkg in packages for key, val in values.items()]
    return "-s -w " + " ".join(flags)


def _compile(tree: Path, root: Path, work: Path, out: Path, log: Path) -> None:
    goroot = root / GOROOT_IN_ROOT
    gopath = work / "gopath"
    link = gopath / "src/k8s.io/kubernetes"
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(tree)
    env = dict(
        os.environ,
        GOROOT=str(goroot),
        GOPATH=str(gopath),
        GOCACHE=str(work / "gocache"),
        GO111MODULE="off",
        CGO_ENABLED="0",
        GOPROXY="off",
        GOFLAGS="",
        PATH=f"{goroot / 'bin'}:{root / 'usr/bin'}:{os.environ.get('PATH', '')}",
        LD_LIBRARY_PATH=f"{root / 'usr/lib/x86_64-linux-gnu'}:{os.environ.get('LD_LIBRARY_PATH', '')}",
    )
    env.pop("GOBIN", None)
    # GOPATH mode finds vendor/ only when the working directory is inside GOPATH; Go takes it
    # from $PWD when that names the same folder, so point $PWD at the symlink.
    env["PWD"] = str(link)
    _run(["make", "gen_openapi"], cwd=link, env=env, log=log)
    out.mkdir(parents=True, exist_ok=True)
    for name in BINARIES[:2]:
        _run(["nice", "-n", "10", str(goroot / "bin/go"), "build", "-o", str(out / name), "-ldflags", _ldflags(),
              f"./cmd/{name}"], cwd=link, env=env, log=log)
    shutil.copy(root / "usr/bin/etcd", out / "etcd")


def build(*, keep_work: bool = False) -> Path:
    """Build the binaries once into the cache (a lock guards concurrent callers); return their folder."""
    target = bin_dir()
    if all((target / name).exists() for name in BINARIES):
        return target
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second caller waits, then finds the binaries
        if all((target / name).exists() for name in BINARIES):
            return target
        work = cache_dir() / "work"
        work.mkdir(exist_ok=True)
        log = cache_dir() / "build.log"
        log.write_text("")
        started = time.monotonic()
        _log(f"building {KUBE_VERSION} into {target} (about 7 minutes on 2 cores; log in {log})")
        tree = _fetch(work, log)
        _fix_reflect2(tree, work / "root")
        staging = cache_dir() / KUBE_VERSION / "bin.partial"
        if staging.exists():
            shutil.rmtree(staging)
        _compile(tree, work / "root", work, staging, log)
        staging.rename(target)  # all three or none: a half build never looks cached
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
        _log(f"built in {time.monotonic() - started:.0f} s")
    return target


# --- 3. start and stop -------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ControlPlane:
    """A started control plane: its URL, admin token, kubeconfig, and the PIDs to stop."""

    def __init__(self, state: Path):
        self.state = Path(state)
        info = json.loads((self.state / "control-plane.json").read_text())
        self.url: str = info["url"]
        self.token: str = info["token"]
        self.kubeconfig = self.state / "kubeconfig"
        self.pids: dict[str, int] = info["pids"]

    def get(self, path: str, *, token: str | None = None) -> tuple[int, bytes]:
        """One GET with the admin token (or another), for readiness checks."""
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {token or self.token}"})
        context = ssl._create_unverified_context()  # the apiserver's self-signed loopback cert
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def _spawn(name: str, cmd: list[str], state: Path, tied: bool) -> subprocess.Popen:
    if tied:
        # SIGTERM when the starting process dies, so a crashed test run leaks nothing. Set by
        # util-linux's setpriv before it execs the binary, not by a preexec_fn: Python code run
        # between fork and exec in a process with other threads (a test session's servers, the
        # face landmarker's pool) can deadlock on a lock one of them held at the fork, and a CI
        # run once hung there for the whole 300 s timeout of the fixture.
        cmd = [SETPRIV, "--pdeathsig", "TERM", "--", *cmd]
    with open(state / f"{name}.log", "ab") as log:
        # Own session: a stop by PID reaches nothing else, and a Ctrl-C on pytest doesn't race us.
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def _write_pids(state: Path, pids: dict[str, int]) -> None:
    (state / "pids.json").write_text(json.dumps(pids))


def _wait(check, what: str, procs: dict[str, subprocess.Popen], state: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (state / f"{name}.log").read_text(errors="replace")[-3000:]
                raise ControlPlaneError(f"{name} exited with rc {proc.returncode} while waiting for {what}:\n{tail}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(POLL_S)
    raise ControlPlaneError(f"timed out after {timeout:.0f} s waiting for {what} (logs in {state})")


def start(state: Path, *, binaries: Path | None = None, tied: bool = False) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager on loopback with their files in ``state``.

    ``tied``: the three die with the calling process (tests); otherwise they outlive it (the CLI).
    """
    binaries = binaries or bin_dir()
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    etcd_port, peer_port, api_port = _free_ports(3)
    token = secrets.token_hex(16)
    (state / "tokens.csv").write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    key = state / "sa.key"
    _run(["openssl", "genrsa", "-out", str(key), "2048"], log=state / "openssl.log")
    _run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(state / "sa.pub")], log=state / "openssl.log")
    url = f"https://127.0.0.1:{api_port}"
    pids: dict[str, int] = {}
    procs: dict[str, subprocess.Popen] = {}
    try:
        procs["etcd"] = _spawn("etcd", [
            str(binaries / "etcd"), "--data-dir", str(state / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
        ], state, tied)
        pids["etcd"] = procs["etcd"].pid
        _write_pids(state, pids)
        procs["kube-apiserver"] = _spawn("kube-apiserver", [
            str(binaries / "kube-apiserver"),
            "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port), "--cert-dir", str(state / "certs"),
            "--endpoint-reconciler-type", "none",
            "--token-auth-file", str(state / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(state / "sa.pub"),
            "--service-account-signing-key-file", str(key),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--allow-privileged=true",
        ], state, tied)
        pids["kube-apiserver"] = procs["kube-apiserver"].pid
        _write_pids(state, pids)
        kubeconfig = state / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "musetalk-test",
            "clusters": [{"name": "musetalk-test", "cluster": {"server": url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": ADMIN_USER, "user": {"token": token}}],
            "contexts": [{"name": "musetalk-test",
                          "context": {"cluster": "musetalk-test", "user": ADMIN_USER, "namespace": "default"}}],
        }))
        (state / "control-plane.json").write_text(json.dumps({"url": url, "token": token, "pids": pids}))
        plane = ControlPlane(state)
        _wait(lambda: plane.get("/readyz")[0] == 200, "kube-apiserver /readyz", procs, state, READY_TIMEOUT_S)
        procs["kube-controller-manager"] = _spawn("kube-controller-manager", [
            str(binaries / "kube-controller-manager"),
            "--kubeconfig", str(kubeconfig),
            "--leader-elect=false", "--port=0",
            "--use-service-account-credentials=false",
            "--controllers", CONTROLLERS,
            "--service-account-private-key-file", str(key),
            "--root-ca-file", str(state / "certs" / "apiserver.crt"),
            "--cluster-signing-cert-file=", "--cluster-signing-key-file=",
            "--secure-port=0",
        ], state, tied)
        pids["kube-controller-manager"] = procs["kube-controller-manager"].pid
        _write_pids(state, pids)
        (state / "control-plane.json").write_text(json.dumps({"url": url, "token": token, "pids": pids}))
        # The ServiceAccount controller made `default`: the controllers are running.
        _wait(lambda: plane.get("/api/v1/namespaces/default/serviceaccounts/default")[0] == 200,
              "the controllers (the default ServiceAccount)", procs, state, READY_TIMEOUT_S)
        return ControlPlane(state)
    except BaseException:
        stop(state)
        raise


def stop(state: Path) -> None:
    """Stop, by PID and newest first, what ``start`` wrote into ``state``; wait until they are gone."""
    path = Path(state) / "pids.json"
    if not path.exists():
        return
    pids = json.loads(path.read_text())
    for name in reversed(list(pids)):
        pid = pids[name]
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while _alive(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(POLL_S)
    path.unlink()


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False  # our own child, now reaped
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        # Someone else's zombie still answers kill(0); its /proc state says Z.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the binaries into the cache (once)")
    b.add_argument("--keep-work", action="store_true", help="keep the 2.7 GB build workspace")
    s = sub.add_parser("start", help="start on loopback; files in DIR; prints the kubeconfig path")
    s.add_argument("dir", type=Path)
    t = sub.add_parser("stop", help="stop what start started in DIR")
    t.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build(keep_work=args.keep_work))
        elif args.command == "start":
            build()
            print(start(args.dir).kubeconfig)
        else:
            stop(args.dir)
    except ControlPlaneError as e:
        _log(f"error: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
