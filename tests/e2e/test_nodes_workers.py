"""The master's side of Noise Search Workers in-process, with a fake pool in place of Ray: where candidates go
(a candidate stays with its worker, a lineage too where children need their parent's state, new ones go to the
least loaded), a lost worker's calls go to another, the worker's ComfyUI arguments, and the errors that name the fix.
"""

from __future__ import annotations

import pytest

from noise_search.tests.helpers.comfy_script import run_in_comfyui

pytestmark = pytest.mark.comfyui

BODY = r'''
import os
import types
from noise_search.nodes.workers import WorkerSpec
from noise_search.nodes.workers.pool import require_ray, wait_exited, worker_argv
from noise_search.nodes.workers.session import RemoteRun
from noise_search.search.types import Candidate

out["argv"] = [worker_argv(["--listen", "0.0.0.0", "--cuda-device", "1", "--port", "8188"], cpu=False),
               worker_argv(["--cuda-device=1", "--lowvram"], cpu=True), worker_argv(["--cpu"], cpu=True)]


class FakeSession:
    """What RemoteRun asks of a Session: the live workers, their rows per call, and gather (which records)."""
    def __init__(self, rows, portable, lose=None):
        self.rows, self.portable, self.lose = rows, portable, lose
        self.pool = types.SimpleNamespace(alive=list(range(len(rows))))
        self.sent = []
    def gather(self, calls, retry=True, reassign=None):
        results = []
        for call in calls:
            if call[0] == self.lose:
                self.pool.alive.remove(self.lose)
                self.lose = None
                call = reassign(call, self.pool.alive[0])
            self.sent.append((call[0], [c["id"] for c in call[2][2]["batch"]]))
            results.append(None)
        return results


def where(session, batch):
    run = RemoteRun(session, 0, None)
    groups = []
    for b in batch:
        groups.append({w: sorted(b[i].id for i in idx) for w, idx in run._split(b).items()})
    return groups


initial = [Candidate(id=i, parent=None, round=0, kind="initial") for i in range(4)]
children = [Candidate(id=4 + i, parent=0, round=1, kind="path", root=0, from_noise=False) for i in range(4)]
out["portable"] = where(FakeSession([2, 2], True), [initial, children, initial[:2]])
out["lineage"] = where(FakeSession([2, 2], False), [initial, children])
out["unequal"] = where(FakeSession([1, 3], True), [initial])

session = FakeSession([2, 2], True, lose=1)
run = RemoteRun(session, 0, None)
run._calls("score", initial, lambda part: {"batch": [initial[i].to_dict() for i in part]})
out["lost"] = [session.sent, run._split(initial[2:])]

import sys
sys.modules["ray"] = None
try:
    require_ray("Noise Search Sampler")
except ValueError as e:
    out["no_ray"] = str(e)
del sys.modules["ray"]

out["direct"] = error(lambda: search({"samples": torch.zeros(1, 16, 8, 8)}, 1, "euler", workers=WorkerSpec()))
import subprocess, time
quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits at once, never reaped: a zombie
slow = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
start = time.monotonic()
out["exited"] = [wait_exited([quick.pid, zombie.pid], timeout=20) == [], time.monotonic() - start,
                 wait_exited([slow.pid, quick.pid], timeout=0.3) == [slow.pid]]

from noise_search.nodes.workers import pool as pool_module
from noise_search.nodes.workers.session import Session

pool = pool_module.Pool.__new__(pool_module.Pool)  # a local Ray's pool whose one worker outlives the wait
pool.actors, pool.alive, pool.pids, pool.started = [], [], [slow.pid], True
pool.spec, pool.node, pool.auth = WorkerSpec(), "Noise Search Sampler", os.environ.get(pool_module.AUTH_MODE)
pool.ray = types.SimpleNamespace(shutdown=lambda: None, kill=lambda a: None)
session = Session.__new__(Session)
session.pool, session.lost, session.hosts, session.seconds, session.ready_s = pool, [], ["h:1"], [1.0], 0.5
pool_module.EXIT_S = 0.3
out["left_note"] = [str(slow.pid), session.close()]
slow.kill()
for p in (quick, zombie, slow):
    p.wait()

out["spec"] = [WorkerSpec().local, WorkerSpec(" ").local, WorkerSpec("10.0.0.5:6379").local]
'''


@pytest.fixture(scope="module")
def result(tiny_sd3_dir):
    return run_in_comfyui(BODY, tiny_sd3_dir)


def test_a_worker_gets_the_masters_arguments_less_its_gpu_choice(result):
    assert result["argv"] == [["--listen", "0.0.0.0", "--port", "8188"], ["--lowvram", "--cpu"], ["--cpu"]]


def test_candidates_stay_with_their_worker_and_new_ones_fill_the_least_loaded(result):
    first, kids, again = result["portable"]
    assert first == {"0": [0, 2], "1": [1, 3]}  # worker -> candidate ids (JSON keys)
    assert kids == {"0": [4, 6], "1": [5, 7]}  # children of one parent spread when they need nothing of it
    assert again == {"0": [0], "1": [1]}  # a candidate goes back to where it ran
    assert result["lineage"] == [{"0": [0, 2], "1": [1, 3]}, {"0": [4, 5, 6, 7]}]  # parent state: the lineage stays
    assert result["unequal"] == [{"0": [0], "1": [1, 2, 3]}]  # by rows per call


def test_a_lost_workers_calls_and_candidates_go_to_another(result):
    sent, after = result["lost"]
    assert sent == [[0, [0, 2]], [0, [1, 3]]]
    assert after == {"0": [0, 1]}


def test_without_ray_the_error_names_the_package(result):
    assert "Noise Search Sampler" in result["no_ray"] and "pip install ray" in result["no_ray"]


def test_workers_without_a_queued_workflow_say_what_to_do(result):
    assert "queue the workflow" in result["direct"] and "workers" in result["direct"]


def test_closing_a_local_ray_waits_until_its_workers_have_exited(result):
    gone, waited, still = result["exited"]
    assert gone and 0.4 < waited < 20  # waited for the one still running, took a zombie for exited
    assert still  # a process that outlives the wait is named


def test_a_worker_that_outlives_the_wait_is_named_in_the_reports_notes(result):
    pid, notes = result["left_note"]
    assert notes[:2] == ["spread over 1 Ray workers: worker 0 (h:1) 1.0 s (100 %)",
                         "workers ready in 0.5 s (Ray started or joined, ComfyUI booted in each, the workflow run up "
                         "to the search)"]
    assert len(notes) == 3 and pid in notes[2] and f"kill {pid}" in notes[2] and "still running 0 s" in notes[2]


def test_an_empty_address_starts_a_local_ray(result):
    assert result["spec"] == [True, True, False]
