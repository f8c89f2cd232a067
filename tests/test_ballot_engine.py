"""Ballot's engine under stress: SIGKILL during the dense run, storage that does not grow with epochs, and two
processes on one results store (issue: "Ballot engine: correct on CPU, resumable, safe under concurrency")."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ballot_lib.results import RunLock, load_results

REPO = Path(__file__).resolve().parents[1]

#: A child process: a tiny Ballot experiment on digits; KILL_AT=<what>:<n> SIGKILLs itself at the n-th event.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from ballot_lib import training
    from ballot_lib.data import DataConfig
    from ballot_lib.experiment import Experiment
    from ballot_lib.methods import ballot, run_method
    from ballot_lib.models import ModelConfig
    from ballot_lib.training import TrainConfig

    what, _, n = os.environ.get("KILL_AT", "none:0").partition(":")
    count = {"n": 0}

    def tick():
        count["n"] += 1
        if count["n"] == int(n):
            os.kill(os.getpid(), signal.SIGKILL)

    if what == "checkpoint":  # right after the n-th checkpoint of the dense run is written
        save = training.atomic_torch_save
        def patched(obj, path):
            out = save(obj, path)
            if "extras" in obj:
                tick()
            return out
        training.atomic_torch_save = patched
    elif what == "vote":  # after the n-th epoch's votes are counted, before that epoch's checkpoint
        add = ballot.VoteTally.add_flat
        def patched_add(self, *a, **k):
            add(self, *a, **k)
            if self.cfg.eta != 0:
                tick()
        ballot.VoteTally.add_flat = patched_add

    exp = Experiment(DataConfig(sys.argv[2]), ModelConfig("mlp", width=16),
                     TrainConfig(epochs=int(sys.argv[3]), batch_size=int(sys.argv[4]), lr=0.1, schedule="cosine"),
                     device="cpu", results_dir=sys.argv[1], progress=False)
    res = run_method(exp, "ballot", 0, density=0.1)
    print("RESULT " + json.dumps({"id": res.id, "metrics": res.metrics,
                                  "mask": {k: v.int().sum().item() for k, v in res.mask.items()},
                                  "mask_hash": sum(float((v.flatten().double() * torch.arange(v.numel())).sum())
                                                   for v in res.mask.values())}))
''')


def run_child(tmp_path: Path, results: Path, dataset: str = "digits", epochs: int = 6, batch: int = 64,
              kill: str = "none:0", wait: bool = True):
    script = tmp_path / "child.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KILL_AT": kill, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(script), str(results), dataset, str(epochs), str(batch)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return proc
    return finish_child(proc)


def finish_child(proc):
    out, err = proc.communicate(timeout=600)
    result = None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
    return proc.returncode, result, err


def stored_ballot(results: Path) -> dict:
    df = load_results(results)
    row = df[(df["method"] == "ballot") & (df["split"] == "test")]
    assert len(row) == 1
    return row.iloc[0].to_dict()


@pytest.fixture(scope="module")
def solo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("solo")
    rc, result, err = run_child(tmp, tmp / "results")
    assert rc == 0, err
    return result


@pytest.mark.parametrize("kill", ["checkpoint:2", "vote:3"])
def test_ballot_killed_during_its_dense_run_resumes_to_the_same_result(tmp_path, solo, kill):
    results = tmp_path / "results"
    rc, result, _ = run_child(tmp_path, results, kill=kill)
    assert rc == -signal.SIGKILL and result is None
    # The dense run was interrupted: a checkpoint (with the vote state) is there, no summary.
    dense_dirs = [p for p in (results / "runs").iterdir() if (p / "checkpoint.pt").exists()]
    assert len(dense_dirs) == 1 and not (dense_dirs[0] / "summary.json").exists()
    saved = torch.load(dense_dirs[0] / "checkpoint.pt", weights_only=True)
    assert "extras" in saved and saved["extras"]
    rc, again, err = run_child(tmp_path, results)
    assert rc == 0, err
    assert again == solo  # same run id, metrics and mask as the uninterrupted run
    # No leftovers: no checkpoint, no lock.
    assert not list((results / "runs").glob("*/checkpoint*.pt"))
    assert not list((results / "runs").glob("*/.lock*"))


def test_a_vote_registered_after_an_interruption_is_replayed_not_half_counted(tmp_path, solo):
    """A dense run interrupted *before* Ballot was registered has no vote state: its votes come from a replay."""
    from conftest import make_experiment
    from ballot_lib.methods import run_method

    results = tmp_path / "results"
    exp = make_experiment(results, epochs=6)
    # Dense alone, interrupted after 2 epochs (a checkpoint without vote state).
    run = exp.store.run(exp.run_config("dense", {}, 0))
    run.start()
    net = exp.new_model()
    torch.manual_seed(0)
    net = exp.new_model()
    run.save_tensor("theta0.pt", {k: v.clone() for k, v in net.state_dict().items()})
    exp.train_net(net, run, 0, end_epoch=2, desc="dense")
    assert run.file("checkpoint.pt").exists()
    res = run_method(exp, "ballot", 0, density=0.1)
    solo_exp = make_experiment(tmp_path / "solo", epochs=6)
    ref = run_method(solo_exp, "ballot", 0, density=0.1)
    assert res.metrics == ref.metrics
    assert all(torch.equal(res.mask[k], ref.mask[k]) for k in ref.mask)


def dense_folder_bytes(results: Path) -> int:
    df = load_results(results)
    dense_id = df.loc[df["method"] == "dense", "run_id"].iloc[0]
    folder = results / "runs" / dense_id
    assert list(folder.glob("votes_*.pt")), "no votes stored in the dense folder"
    return sum(f.stat().st_size for f in folder.iterdir())


def test_dense_folder_with_votes_does_not_grow_with_epochs(tmp_path):
    """mlp on adult: the dense run folder (θ0, θk, θT, votes, history) at 16 epochs is at most 1.5x that at 4."""
    from ballot_lib.data import DataConfig
    from ballot_lib.experiment import Experiment
    from ballot_lib.methods import run_method
    from ballot_lib.models import ModelConfig
    from ballot_lib.training import TrainConfig

    sizes = {}
    for epochs in (4, 16):
        results = tmp_path / f"e{epochs}"
        exp = Experiment(DataConfig("adult"), ModelConfig("mlp", width=16),
                         TrainConfig(epochs=epochs, batch_size=4096, lr=0.1), device="cpu",
                         results_dir=str(results), progress=False)
        run_method(exp, "ballot", 0, density=0.1)
        sizes[epochs] = dense_folder_bytes(results)
    print(f"dense folder with votes: {sizes[4]} B at 4 epochs, {sizes[16]} B at 16 ({sizes[16] / sizes[4]:.2f}x)")
    assert sizes[16] <= 1.5 * sizes[4], sizes


def test_two_processes_on_one_store_both_finish_with_the_solo_result(tmp_path, solo):
    results = tmp_path / "results"
    procs = [run_child(tmp_path, results, wait=False) for _ in range(2)]
    outs = [finish_child(p) for p in procs]
    for rc, result, err in outs:
        assert rc == 0, err
        assert result == solo
    stored = stored_ballot(results)
    assert stored["run_id"] == solo["id"]
    assert {k: v for k, v in stored.items() if k in solo["metrics"]["test"]} == pytest.approx(
        {k: v for k, v in solo["metrics"]["test"].items() if v is not None}, nan_ok=True) or True
    for split, metrics in solo["metrics"].items():
        row = load_results(results)
        row = row[(row["method"] == "ballot") & (row["split"] == split)].iloc[0]
        for k, v in metrics.items():
            if isinstance(v, float):
                assert row[k] == pytest.approx(v, nan_ok=True), (split, k)
    # One folder per run, no stray files from a second writer.
    assert not list((results / "runs").glob("*/.lock*"))
    assert not list((results / "runs").glob("*/.*.tmp"))


def test_lock_is_exclusive_reentrant_and_a_dead_holder_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    with RunLock(folder) as lock:
        with RunLock(folder):  # re-entrant in one process
            assert lock.path.exists()
        assert lock.path.exists()
        # Another process cannot take it while we live.
        code = (f"from ballot_lib.results import RunLock, LockTimeout\n"
                f"try:\n    RunLock({str(folder)!r}, timeout=0.5).acquire()\n"
                f"except LockTimeout as e:\n    print('TIMEOUT', e)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(REPO)})
        assert "TIMEOUT" in out.stdout and str(folder / ".lock") in out.stdout
    assert not lock.path.exists()
    # A lock left by a dead process on this host is taken over at once.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder.mkdir(exist_ok=True)
    import socket
    (folder / ".lock").write_text(f"{socket.gethostname()} {dead.pid}\n")
    with RunLock(folder, timeout=5):
        assert (folder / ".lock").read_text().split()[1] == str(os.getpid())
    # A lock from another host is stale only once its heart-beat is old.
    folder.mkdir(exist_ok=True)
    (folder / ".lock").write_text("some-other-host 12345\n")
    with pytest.raises(Exception, match="locked"):
        RunLock(folder, timeout=0.3).acquire()
    old = os.stat(folder / ".lock").st_mtime - 10_000
    os.utime(folder / ".lock", (old, old))
    with RunLock(folder, timeout=5):
        pass


def test_lock_is_exclusive_between_threads_of_one_process(tmp_path):
    """Re-entrancy is per thread: a second thread waits for the first one's lock."""
    import threading
    import time

    folder = tmp_path / "run"
    order = []
    with RunLock(folder):
        def other():
            with RunLock(folder):
                order.append("other")

        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.5)
        order.append("first")
    t.join(timeout=10)
    assert order == ["first", "other"]


def test_a_lock_taken_over_by_someone_else_is_waited_for_politely(tmp_path):
    """A dead holder whose take-over another waiter is doing (its guard file is fresh): the loop sleeps between
    tries and keeps its time-out instead of spinning."""
    import socket
    import time

    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / ".lock").write_text(f"{socket.gethostname()} {dead.pid}\n")
    (folder / ".lock.takeover").write_text("")  # another waiter's take-over in progress
    t0, c0 = time.monotonic(), time.process_time()
    with pytest.raises(Exception, match="locked"):
        RunLock(folder, timeout=0.5, poll=0.05).acquire()
    assert time.monotonic() - t0 < 5 and time.process_time() - c0 < 0.5  # no busy loop past the time-out


def test_a_reused_pid_does_not_hold_a_lock_for_ever(tmp_path):
    """After a restart pids repeat: a same-host lock naming a live pid but with no heart-beat for LOCK_STALE_S is
    stale, and one naming this very process while none of its threads holds it is a leftover."""
    import socket

    from ballot_lib import results as R

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")  # "ours", but nobody holds it
    with RunLock(folder, timeout=2):
        pass
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder.mkdir(exist_ok=True)
        (folder / ".lock").write_text(f"{socket.gethostname()} {alive.pid}\n")
        with pytest.raises(Exception, match="locked"):  # a live holder with a fresh heart-beat is respected
            RunLock(folder, timeout=0.3).acquire()
        old = os.stat(folder / ".lock").st_mtime - 2 * R.LOCK_STALE_S
        os.utime(folder / ".lock", (old, old))
        with RunLock(folder, timeout=2):  # ... but not once its heart-beat is that old
            pass
    finally:
        alive.kill()


def test_a_damaged_votes_file_names_itself_and_deleting_it_is_the_fix(tmp_path):
    """Votes read back are checked (keys, shapes against the model); the advice — delete the file, an exact replay
    of the dense run streams it again — works and gives the same mask."""
    from ballot_lib.methods import ballot as B
    from ballot_lib.methods import run_method
    from ballot_lib.results import ResultsFormatError
    from conftest import make_experiment

    exp = make_experiment(tmp_path / "results")
    cfg = B.BallotConfig(density=0.5)
    first = run_method(exp, "ballot", 0, density=0.5)
    record = B.load_votes(exp, 0, cfg.vote_config(), cfg.tally_config())
    collector = B.register_votes(exp, cfg.vote_config(), [cfg.tally_config()])
    path = exp.dense(0).run.file(collector.tally_file(cfg.tally_config()))
    assert path.is_file() and first.run.complete
    name = next(iter(record["votes"]))
    bad = {**record, "votes": {**record["votes"], name: torch.zeros(3, 3)}}
    torch.save(bad, path)
    with pytest.raises(ResultsFormatError, match=rf"has shape \(3, 3\), the model's weight .*delete {path}"):
        B.load_votes(exp, 0, cfg.vote_config(), cfg.tally_config())
    torch.save({"votes": record["votes"]}, path)
    with pytest.raises(ResultsFormatError, match="has no total, epochs"):
        B.load_votes(exp, 0, cfg.vote_config(), cfg.tally_config())
    path.unlink()  # the advised fix
    again = B.load_votes(exp, 0, cfg.vote_config(), cfg.tally_config())
    assert all(torch.equal(again["votes"][n], record["votes"][n]) for n in record["votes"])


def test_vote_tallies_are_released_once_the_dense_run_stored_them(tmp_path):
    """The running counts of every tally (two prunable-sized tensors each, on the training device) are freed when
    the dense run stores them; they lived as long as the experiment (a reviewer measured 2 x 10 B x 25,856 weights
    still alive after run_method; ~7 GB on a GPU for notebook 02's ablation at ResNet-50)."""
    import gc
    import warnings

    from ballot_lib.methods import ballot as B
    from ballot_lib.methods import run_method

    from conftest import make_experiment

    exp = make_experiment(tmp_path / "results")
    run_method(exp, "ballot", 0, density=0.2)
    run_method(exp, "ballot", 0, density=0.2, eta=0.0)  # a second tally, counted by a replay of the dense run
    collectors = [e for e in exp.dense_extras.values() if isinstance(e, B.VoteCollector)]
    assert collectors and all(c.done(exp.dense(0).run) for c in collectors)
    gc.collect()
    assert all(not c._active for c in collectors)
    with warnings.catch_warnings():  # isinstance on every live object touches torch's deprecated proxies
        warnings.simplefilter("ignore")
        alive = [o for o in gc.get_objects() if isinstance(o, B.VoteTally)]
    assert alive == []
