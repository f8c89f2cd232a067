"""The store's repair tools and its lock under damage: ``results check`` reads every file it knows,
``remove-derived`` only takes a dense run (also one whose config is unreadable) and agrees with the advice the
errors give, the lock's heart-beat keeps up with ``$BALLOT_LOCK_STALE_S``, a released lock is only removed by its
owner, and a wait on a lock says what it waits for."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ballot_lib import results as R
from ballot_lib.methods import run_method
from ballot_lib.results import LockTimeout, ResultsError, RunLock, load_results

from conftest import make_experiment, tree

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with seed 0's dense run, an MP and an LTH run derived from it (copied for each test)."""
    exp = make_experiment(tmp_path_factory.mktemp("robust") / "results")
    dense = exp.dense(0)
    mp = run_method(exp, "mp", 0, density=0.5, finetune="short")
    lth = run_method(exp, "lth", 0, density=0.5)
    return exp.store.root, {"dense": dense.id, "mp": mp.id, "lth": lth.id}


@pytest.fixture
def copy(store, tmp_path):
    src, ids = store
    root = tmp_path / "results"
    shutil.copytree(src, root)
    return root, ids


def _run_dir(root: Path, run_id: str) -> Path:
    return root / "runs" / run_id


def _truncate(p: Path) -> None:
    with open(p, "r+b") as f:
        f.truncate(10)


def _cli(argv, capsys):
    rc = R.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


# ------------------------------------------------------------------------------------------ 1. check


def test_check_of_a_sound_store_is_clean(copy, capsys):
    root, _ = copy
    rc, out, err = _cli(["check", str(root)], capsys)
    assert rc == 0 and "0 bad run(s)" in out, out + err


def _wrong_keys(p: Path) -> None:
    torch.save({"renamed." + k: v for k, v in torch.load(p, weights_only=True).items()}, p)


# (run, file, corruption, text the message must hold besides the file)
CHECK_CASES = [
    ("mp", "mask.pt", _truncate, "rm -r"),
    ("mp", "mask.pt", lambda p: torch.save(torch.ones(3), p), "does not hold a mask"),
    ("dense", "thetaT.pt", _truncate, "remove-derived"),
    ("dense", "theta0.pt", _wrong_keys, "remove-derived"),
    ("dense", "theta_e1.pt", _truncate, "delete"),
    ("lth", "history.json", lambda p: p.write_text('{"a": 1}'), "list of per-epoch"),
    ("dense", "history.json", lambda p: p.write_text('[{"epoch": 1,'), "remove-derived"),
    # Files a complete run must hold: gone, or without a split it was evaluated on.
    ("mp", "mask.pt", lambda p: p.unlink(), "is marked complete, and a complete"),
    ("lth", "history.json", lambda p: p.unlink(), "is marked complete, and a complete"),
    ("mp", "metrics.json", lambda p: p.write_text('{"val": {"acc": 0.5}}'), "has no test split"),
]


@pytest.mark.parametrize("which,name,corrupt,expected", CHECK_CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CHECK_CASES)])
def test_check_reads_every_file_of_a_run(copy, capsys, which, name, corrupt, expected):
    root, ids = copy
    path = _run_dir(root, ids[which]) / name
    corrupt(path)
    before = tree(root)
    rc, out, err = _cli(["check", str(root)], capsys)
    assert rc == 1, out + err
    assert "1 bad run(s)" in out, out
    line = next(line for line in out.splitlines() if str(path) in line)
    assert expected in line, line
    assert tree(root) == before  # check writes nothing


@pytest.mark.parametrize("name", ["mask.pt", "history.json", "metrics.json"])
def test_a_complete_run_missing_a_file_is_an_error_everywhere_it_is_read(copy, name):
    """A sparse run without its mask must not load as a dense model (density 1), nor be used as the twin of a
    val-rule run; a lost history or test split must not drop the run from a table without a word."""
    root, ids = copy
    path = _run_dir(root, ids["mp"]) / name
    if name == "metrics.json":
        path.write_text('{"val": {"acc": 0.5}}')
    else:
        path.unlink()
    before = tree(root)
    with pytest.raises(ResultsError, match=str(path)):
        load_results(root)
    with pytest.raises(ResultsError, match=str(path)):
        R.load_history(root)
    exp = make_experiment(root)
    with pytest.raises(ResultsError, match=str(path)):
        run_method(exp, "mp", 0, density=0.5, finetune="short")
    with pytest.raises(ResultsError, match=str(path)):  # the val-rule twin of the damaged run
        run_method(exp, "mp", 0, density=0.5, finetune="short", select="val_rule")
    assert tree(root) == before


def test_check_reports_each_bad_file_of_the_reviewers_case(copy, capsys):
    """mask.pt and thetaT.pt truncated and history.json = {"a": 1}: each is reported, the exit status is 1."""
    root, ids = copy
    _truncate(_run_dir(root, ids["mp"]) / "mask.pt")
    _truncate(_run_dir(root, ids["dense"]) / "thetaT.pt")
    (_run_dir(root, ids["lth"]) / "history.json").write_text('{"a": 1}')
    rc, out, err = _cli(["check", str(root)], capsys)
    assert rc == 1 and "3 bad run(s)" in out, out + err
    for run, name in (("mp", "mask.pt"), ("dense", "thetaT.pt"), ("lth", "history.json")):
        assert str(_run_dir(root, ids[run]) / name) in out


def test_check_reads_ballot_votes_and_lth_levels(tmp_path, capsys):
    exp = make_experiment(tmp_path / "results")
    run_method(exp, "ballot", 0, density=0.5)
    lth = run_method(exp, "lth", 0, density=0.25, levels=2)
    root = exp.store.root
    assert _cli(["check", str(root)], capsys)[0] == 0
    votes = sorted((root / "runs").glob("*/votes_*.pt"))[0]
    record = torch.load(votes, weights_only=True)
    record["votes"] = {k: v[:2] for k, v in record["votes"].items()}
    torch.save(record, votes)
    _truncate(lth.run.file("level1_mask.pt"))
    rc, out, err = _cli(["check", str(root)], capsys)
    assert rc == 1 and "2 bad run(s)" in out, out + err
    assert f"{votes} is malformed ('votes': wrong shapes" in out and f"delete {votes}" in out, out
    assert str(lth.run.file("level1_mask.pt")) in out


@pytest.mark.parametrize("make", ["missing", "empty-folder", "a-file"])
def test_check_of_a_folder_that_is_not_a_store_is_an_error(tmp_path, capsys, make):
    target = tmp_path / "nonexistent"
    if make == "empty-folder":
        target.mkdir()
    elif make == "a-file":
        target.write_text("x")
    before = tree(tmp_path)
    rc, out, err = _cli(["check", str(target)], capsys)
    assert rc == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(target) in err and "runs" in err, err
    assert "bad run" not in out
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------------------ 2. remove-derived


@pytest.mark.parametrize("which", ["mp", "lth"])
@pytest.mark.parametrize("dry", [True, False])
def test_remove_derived_refuses_a_run_that_is_not_dense(copy, capsys, which, dry):
    root, ids = copy
    before = tree(root)
    rc, out, err = _cli(["remove-derived", str(_run_dir(root, ids[which]))] + (["--dry-run"] if dry else []), capsys)
    assert rc == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "dense" in err and str(_run_dir(root, ids[which])) in err and "rm -r" in err, err
    assert out == "" and tree(root) == before


def test_a_dense_run_with_a_corrupt_config_gets_advice_that_works(copy, capsys):
    """`truncate -s 10 <dense>/config.json`: the error says remove-derived, and remove-derived does it."""
    root, ids = copy
    dense = _run_dir(root, ids["dense"])
    _truncate(dense / "config.json")
    with pytest.raises(ResultsError) as err:
        load_results(root)
    msg = str(err.value)
    assert str(dense / "config.json") in msg and f"remove-derived {dense}" in msg and "rm -r" not in msg, msg
    rc, out, err = _cli(["remove-derived", str(dense), "--dry-run"], capsys)
    assert rc == 0, err
    assert sorted(Path(line.split()[-1]).name for line in out.splitlines()) == sorted(ids.values())
    assert sorted(p.name for p in (root / "runs").iterdir()) == sorted(ids.values())  # dry run: nothing removed
    rc, out, err = _cli(["remove-derived", str(dense)], capsys)
    assert rc == 0, err
    assert list((root / "runs").iterdir()) == []
    assert _cli(["check", str(root)], capsys)[0] == 0
    exp = make_experiment(root)
    assert run_method(exp, "mp", 0, density=0.5, finetune="short").summary["density"] == pytest.approx(0.5, abs=0.01)


def test_a_dense_run_whose_config_was_replaced_by_another_runs_gets_remove_derived(copy, capsys):
    root, ids = copy
    dense = _run_dir(root, ids["dense"])
    shutil.copy(_run_dir(root, ids["mp"]) / "config.json", dense / "config.json")
    with pytest.raises(ResultsError, match=f"remove-derived {dense}"):
        load_results(root)
    rc, out, err = _cli(["remove-derived", str(dense), "--dry-run"], capsys)
    assert rc == 0, err
    assert len(out.splitlines()) == 3


def test_a_dense_run_without_config_is_still_recognised(copy, capsys):
    root, ids = copy
    dense = _run_dir(root, ids["dense"])
    (dense / "config.json").unlink()
    with pytest.raises(ResultsError, match=f"remove-derived {dense}"):
        load_results(root)
    rc, out, err = _cli(["remove-derived", str(dense)], capsys)
    assert rc == 0, err
    assert list((root / "runs").iterdir()) == []


def test_a_sparse_run_with_a_corrupt_config_gets_rm_and_rm_works(copy, capsys):
    root, ids = copy
    mp = _run_dir(root, ids["mp"])
    _truncate(mp / "config.json")
    with pytest.raises(ResultsError) as err:
        load_results(root)
    assert f"rm -r {mp}" in str(err.value) and "remove-derived" not in str(err.value)
    rc, _, err_text = _cli(["remove-derived", str(mp)], capsys)
    assert rc == 2 and f"rm -r {mp}" in err_text
    shutil.rmtree(mp)
    assert _cli(["check", str(root)], capsys)[0] == 0


def test_remove_derived_keeps_its_hands_off_a_run_another_process_writes(copy, capsys):
    root, ids = copy
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = _run_dir(root, ids["mp"]) / ".lock"
        lock.write_text(f"{socket.gethostname()} {holder.pid} sometoken\n")
        before = tree(root)
        rc, out, err = _cli(["remove-derived", str(_run_dir(root, ids["dense"]))], capsys)
        assert rc == 2 and str(lock) in err and "locked" in err, err
        assert tree(root) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_removal_killed_midway_is_completed_by_running_it_again(copy, capsys, monkeypatch):
    """Folders leave runs/ one rename at a time, the dense run last: a removal interrupted after the first leaves
    the dense run in place, and the same command finishes the job."""
    root, ids = copy
    dense = _run_dir(root, ids["dense"])
    real_rename, calls = os.rename, []

    def rename_once_then_die(src, dst):
        if calls:
            raise KeyboardInterrupt
        calls.append(src)
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename_once_then_die)
    with pytest.raises(KeyboardInterrupt):
        R.main(["remove-derived", str(dense)])
    monkeypatch.setattr(os, "rename", real_rename)
    capsys.readouterr()
    assert dense.is_dir() and len(list((root / "runs").iterdir())) == 2
    assert not list((root / "runs").glob("*/.lock*"))  # the locks were released
    rc, out, err = _cli(["remove-derived", str(dense)], capsys)
    assert rc == 0, err
    assert list((root / "runs").iterdir()) == [] and not (root / ".removing").exists()


# ------------------------------------------------------------------------------------------ 3. the lock


def test_heart_beat_keeps_up_with_a_short_stale_time(tmp_path, monkeypatch):
    """The heart-beat runs at a third of the stale time: a held lock's file is never older than that time."""
    monkeypatch.setattr(R, "LOCK_STALE_S", 1.5)
    folder = tmp_path / "run"
    with RunLock(folder) as lock:
        t0 = time.time()
        worst = 0.0
        while time.time() - t0 < 3.0:
            worst = max(worst, time.time() - lock.path.stat().st_mtime)
            time.sleep(0.05)
    assert worst < 1.5, worst


def test_a_live_holder_keeps_its_lock_with_a_short_stale_time(tmp_path):
    """`BALLOT_LOCK_STALE_S=5`: a live process holding the lock for longer than that is not taken over."""
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BALLOT_LOCK_STALE_S": "5"}
    code = (f"import time, sys\nfrom ballot_lib.results import RunLock\n"
            f"with RunLock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code_b = (f"from ballot_lib.results import RunLock, LockTimeout\n"
                  f"try:\n    RunLock({str(folder)!r}, timeout=7).acquire()\n    print('TOOK')\n"
                  f"except LockTimeout:\n    print('WAITED')\n")
        out = subprocess.run([sys.executable, "-c", code_b], env=env, capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "WAITED", out.stdout + out.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("value", ["1", "0", "-5", "abc", "nan", "inf"])
def test_a_stale_time_too_short_or_not_a_number_is_a_clear_error(tmp_path, value):
    folder = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BALLOT_LOCK_STALE_S": value}
    code = (f"from ballot_lib.results import RunLock, ResultsError\n"
            f"try:\n    RunLock({str(folder)!r}, timeout=1).acquire()\n    print('ACQUIRED')\n"
            f"except ResultsError as e:\n    print('ERROR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("ERROR") and "BALLOT_LOCK_STALE_S" in out.stdout, out.stdout + out.stderr
    assert not folder.exists()  # nothing written


def test_release_leaves_a_lock_it_no_longer_owns(tmp_path):
    folder = tmp_path / "run"
    lock = RunLock(folder).acquire()
    # Another process judged it stale and took it over meanwhile.
    lock.path.write_text("other-host 4242 theirtoken\n")
    lock.release()
    assert lock.path.read_text() == "other-host 4242 theirtoken\n"
    # Our own lock is removed on release.
    lock.path.unlink()
    with RunLock(folder) as again:
        assert again.path.exists()
    assert not (folder / ".lock").exists()


def test_an_empty_lock_file_is_announced_and_taken_over_once_old(tmp_path, capfd):
    folder = tmp_path / "run"
    folder.mkdir()
    lock = folder / ".lock"
    lock.write_text("")
    with pytest.raises(LockTimeout):
        RunLock(folder, timeout=3, poll=0.05).acquire()
    err = capfd.readouterr().err
    waiting = [line for line in err.splitlines() if str(lock) in line]
    assert len(waiting) == 1 and "delete" in waiting[0], err  # said once, with the fix
    old = time.time() - 120
    os.utime(lock, (old, old))
    t0 = time.monotonic()
    with RunLock(folder, timeout=5):
        pass
    assert time.monotonic() - t0 < 3


# ------------------------------------------------------------------------------------------ 4. a missing θ0


def test_a_deleted_theta0_gets_the_fix(copy):
    root, ids = copy
    theta0 = _run_dir(root, ids["dense"]) / "theta0.pt"
    theta0.unlink()
    before = tree(root)
    exp = make_experiment(root)
    with pytest.raises(ResultsError) as err:
        run_method(exp, "lth", 0, density=0.25)
    msg = str(err.value)
    assert f"{theta0} does not exist" in msg and f"remove-derived {theta0.parent}" in msg, msg
    assert tree(root) == before


# ------------------------------------------------------------------------------------------ a lock taken over
# from a live (paused) holder: the holder stops writing instead of mixing its files with the new owner's

def _take_over_by_another(lock_file: Path) -> None:
    lock_file.write_text("otherhost 4242 theirtoken\n")


def test_a_holder_whose_lock_was_taken_over_writes_nothing_more(tmp_path):
    store = R.ResultsStore(tmp_path)
    run = store.run({"method": "dense", "seed": 0})
    run.start()
    with run.lock():
        run.write_json("a.json", {"x": 1})  # held: writes
        run.save_tensor("checkpoint.pt", {"w": torch.zeros(1)})
        _take_over_by_another(run.file(".lock"))  # e.g. this process was paused longer than the stale time
        with pytest.raises(R.LockLost, match=r"taken over by otherhost pid 4242 .* stops writing"):
            run.write_json("a.json", {"x": 2})
        with pytest.raises(R.LockLost):
            run.save_tensor("weights.pt", {"w": torch.ones(1)})
        with pytest.raises(R.LockLost):
            run.finish({"done": True})
        assert R.read_json(run.file("a.json")) == {"x": 1}  # the new owner's files are untouched
        assert run.file("checkpoint.pt").exists() and not run.file("weights.pt").exists()
        assert not run.complete and not list(run.path.glob(".*.tmp"))
        run.file(".lock").unlink()  # the new owner released it: still not ours
        with pytest.raises(R.LockLost, match="which has released it since"):
            run.write_json("a.json", {"x": 3})
    # Writes outside any lock this process took (and after release) are not affected.
    run.write_json("b.json", {"y": 1})


def test_a_run_whose_lock_is_taken_over_during_training_stops_with_lock_lost(tmp_path, monkeypatch):
    import ballot_lib.experiment as experiment_module

    exp = make_experiment(tmp_path / "results")
    real_train = experiment_module.train

    def paused_then_resumed(net, bundle, cfg, **kw):
        _take_over_by_another(Path(kw["checkpoint"]).parent / ".lock")
        return real_train(net, bundle, cfg, **kw)

    monkeypatch.setattr(experiment_module, "train", paused_then_resumed)
    with pytest.raises(R.LockLost):
        run_method(exp, "dense", 0)
    runs = list((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 1 and not (runs[0] / "summary.json").exists()


def test_replaying_a_rewind_point_holds_the_dense_lock_and_clears_a_killed_replay(tmp_path, monkeypatch):
    exp = make_experiment(tmp_path / "results", epochs=6)
    dense = exp.dense(0).run
    assert not dense.file("theta_e4.pt").exists()  # not a point the dense run keeps: replayed on demand
    leftover = dense.file(".theta_e4.pt.abc123.tmp")  # a replay killed while saving θ4
    leftover.write_bytes(b"partial")
    locked = []
    real = R.RunLock.acquire

    def acquire(self):
        locked.append(self.folder)
        return real(self)

    monkeypatch.setattr(R.RunLock, "acquire", acquire)
    theta4 = exp.dense_weights(0, 4)
    assert dense.path in locked and dense.file("theta_e4.pt").exists() and not leftover.exists()
    assert set(theta4) == set(exp.param_shapes())


def test_check_lists_unfinished_runs_with_their_size_and_whether_they_run(tmp_path, capsys):
    """A run killed and never resumed keeps its checkpoints (GBs at paper scale); check said '0 bad runs' and
    nothing else. It now lists each unfinished run, its size, and whether a live process holds it."""
    store = R.ResultsStore(tmp_path)
    done = store.run({"method": "dense", "seed": 0})
    done.start()
    done.finish({"x": 1})
    killed = store.run({"method": "lth", "seed": 1})
    killed.start()
    killed.save_tensor("checkpoint_l2.pt", {"w": torch.zeros(1000)})
    live = store.run({"method": "mp", "seed": 2})
    live.start()
    with live.lock():
        rc, out, err = _cli(["check", str(tmp_path)], capsys)
    assert f"unfinished: {killed.path} (lth, seed 1, " in out and "not running: re-run the same call" in out, out
    assert f"unfinished: {live.path} (mp, seed 2, " in out and f"running ({socket.gethostname()} pid {os.getpid()})" \
        in out, out
    assert f"unfinished: {done.path}" not in out
    sizes = {u["folder"]: u["bytes"] for u in R.unfinished_runs(tmp_path)}
    assert sizes[killed.path] > 4000


def test_a_holder_that_lost_its_lock_does_not_discard_the_new_owners_config(tmp_path):
    """A paused process that wakes after a take-over fails with LockLost inside discard_if_unstarted: it must not
    delete config.json, which is now the new owner's (it did when that was all the folder held)."""
    store = R.ResultsStore(tmp_path)
    run = store.run({"method": "mp", "seed": 0})
    with run.lock():
        run.start()
        with pytest.raises(R.LockLost):
            with R.discard_if_unstarted(run):
                _take_over_by_another(run.file(".lock"))
                run.write_json("history.json", [])
        assert run.file("config.json").exists()
        run.file(".lock").unlink()
    # A run that failed while its lock was its own is still discarded.
    other = store.run({"method": "mp", "seed": 1})
    with other.lock():
        other.start()
        with pytest.raises(RuntimeError):
            with R.discard_if_unstarted(other):
                raise RuntimeError("boom")
        assert not other.file("config.json").exists()
