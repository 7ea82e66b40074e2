"""Ray, from the master's side: start or join it, place the workers, run calls on them, stop them.

Ray does placement (a worker per GPU share), transport and the cluster; this module only says what runs where.
A local Ray started here listens on 127.0.0.1 and lives for one search; joining a cluster is the address given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Iterable, Optional

from .spec import WorkerSpec

AUTH_MODE = "RAY_AUTH_MODE"
USAGE_STATS = "RAY_USAGE_STATS_ENABLED"  # a local Ray sends no usage report unless the user enabled it
DROP_ARGS = {"--cuda-device": 1}  # the master's own GPU choice; Ray gives each worker its GPUs
EXIT_S = 30.0  # how long close() waits for a local Ray's worker processes to exit

log = logging.getLogger(__name__)


def require_ray(node: str):
    """The ray module, or an error naming the package to install."""
    try:
        import ray
    except ImportError as e:
        raise ValueError(f"{node}: spreading a search over workers needs Ray: pip install ray (in ComfyUI's Python "
                         f"environment, on every machine of the cluster)") from e
    return ray


def worker_argv(argv: list, cpu: bool) -> list:
    """The master's ComfyUI arguments for a worker: its own GPU choice dropped, --cpu for CPU-only workers."""
    out, skip = [], 0
    for arg in argv:
        if skip:
            skip -= 1
            continue
        name = arg.split("=", 1)[0]
        if name in DROP_ARGS:
            skip = DROP_ARGS[name] if "=" not in arg else 0
            continue
        out.append(arg)
    if cpu and "--cpu" not in out:
        out.append("--cpu")
    return out


def worker_cpus(spec: WorkerSpec) -> int:
    """CPU cores per worker. CPU-only workers on this machine share its cores (Ray sets each one's torch threads
    to its share); a GPU worker, or one on a cluster, holds one."""
    if spec.local and spec.gpus_per_worker == 0:
        return max(1, (os.cpu_count() or 1) // spec.workers)
    return 1


@contextlib.contextmanager
def _loopback(ray):
    """A local Ray that listens on 127.0.0.1 only. Ray on Linux gives a node the machine's outward address (and
    binds its servers there); its constant for single-machine platforms makes it the loopback address. Ray's
    usage report (on by default) stays off unless RAY_USAGE_STATS_ENABLED says otherwise."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    if constants is None or not hasattr(constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError(f"this Ray ({ray.__version__}) has no switch to keep a local Ray on 127.0.0.1: use a "
                           f"Ray started with `ray start --head --node-ip-address 127.0.0.1` and its address")
    before, usage = constants.ENABLE_RAY_CLUSTER, os.environ.get(USAGE_STATS)
    constants.ENABLE_RAY_CLUSTER = False
    os.environ.setdefault(USAGE_STATS, "0")
    try:
        yield
    finally:
        constants.ENABLE_RAY_CLUSTER = before
        if usage is None:
            os.environ.pop(USAGE_STATS, None)


def _restore_auth(ray, before: Optional[str]) -> None:
    """After a local Ray stops: ComfyUI's authentication mode as it was. Ray 2.60 turns token authentication on
    for the whole process when it starts a local Ray, and a cluster joined later without tokens would then lose
    every worker it places."""
    if os.environ.get(AUTH_MODE) == before:
        return
    if before is None:
        os.environ.pop(AUTH_MODE, None)
    else:
        os.environ[AUTH_MODE] = before
    raylet = getattr(ray, "_raylet", None)
    if hasattr(raylet, "Config"):
        raylet.Config.initialize("")
    if hasattr(raylet, "AuthenticationTokenLoader"):
        raylet.AuthenticationTokenLoader.instance().reset_cache()


def wait_exited(pids: Iterable[int], timeout: float = EXIT_S) -> list:
    """Wait until these processes have exited (a zombie counts as exited); returns those still running after
    `timeout`. A worker told to stop exits a moment later, once its ComfyUI threads are down."""
    import psutil

    deadline, left = time.monotonic() + timeout, list(pids)
    while left:
        running = []
        for pid in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    running.append(pid)
        left = running
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return left


class Pool:
    """The workers of one search: Ray started (or joined) and the actors placed; close() leaves nothing running."""

    def __init__(self, spec: WorkerSpec, node: str):
        self.ray = ray = require_ray(node)
        self.spec, self.node = spec, node
        self.started, self.auth = False, os.environ.get(AUTH_MODE)
        if not ray.is_initialized():
            if spec.local:
                with _loopback(ray):
                    ray.init(address="local", include_dashboard=spec.dashboard, dashboard_host="127.0.0.1",
                             num_cpus=max(os.cpu_count() or 1, spec.workers), namespace="noise_search",
                             configure_logging=False, log_to_driver=False)
            else:
                ray.init(address=spec.address, namespace="noise_search", configure_logging=False,
                         log_to_driver=False)
            self.started = True
        from . import actor

        ray.cloudpickle.register_pickle_by_value(actor)
        remote = ray.remote(num_cpus=worker_cpus(spec), num_gpus=spec.gpus_per_worker, max_restarts=0,
                            concurrency_groups={"control": 1})(actor.SearchWorker)
        import folder_paths

        comfyui = os.path.dirname(os.path.realpath(folder_paths.__file__))
        pack = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
        argv = worker_argv(sys.argv[1:], cpu=spec.gpus_per_worker == 0)
        self.actors = [remote.remote(comfyui, argv, pack, w) for w in range(spec.workers)]
        self.alive = list(range(spec.workers))
        self.pids: list = []  # the workers' processes, once they have said (a local Ray's wait for them in close)

    def call(self, w: int, method: str, *args):
        return getattr(self.actors[w], method).remote(*args)

    def interrupt(self) -> None:
        for w in self.alive:
            self.actors[w].interrupt.remote()

    def close(self) -> list:
        """Kill every worker process; stop the local Ray this pool started, and wait until its workers have
        exited, so that none outlives the search (or leave the joined cluster). Returns a note for the report
        if some are still running after EXIT_S."""
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # a worker already gone
                pass
        self.actors, self.alive = [], []
        if self.started:
            self.ray.shutdown()
            _restore_auth(self.ray, self.auth)
            if self.spec.local and (left := wait_exited(self.pids, EXIT_S)):
                pids = " ".join(map(str, left))
                note = (f"Ray worker processes {pids} were still running {EXIT_S:.0f} s after the search stopped "
                        f"them: if they stay, end them (kill {pids})")
                log.warning("%s: %s", self.node, note)
                return [note]
        return []

    def lost(self, w: int) -> Optional[int]:
        if w in self.alive:
            self.alive.remove(w)
        return self.alive[0] if self.alive else None
