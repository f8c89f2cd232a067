"""The results store (SPEC §8): one folder per run, named by a hash of its full configuration and seed.

Layout of ``<results root>/runs/<run_id>/``:

* ``config.json``   the full configuration (what the hash was computed from), written first;
* ``checkpoint.pt`` training state while the run is in progress (removed when it completes);
* ``history.json``  per-epoch metrics;
* ``metrics.json``  final metrics per split: overall, per class, per group;
* ``mask.pt``       the mask (sparse methods): plain bool tensors (1 byte per weight), or bit-packed (1 bit per
                    weight) with ``$BALLOT_MASK_FORMAT=packed``; ``pruning.load_mask`` reads both;
* ``final_mask.pt`` a val-rule run of a method whose mask changes during training (SafeCompress, FairScratch): the
                    final mask beside the selected epoch's ``mask.pt``, from which its ``select="last"`` twin is
                    derived (:func:`ballot_lib.methods.base.training_twin`);
* ``*.pt``          stored weights (the dense run keeps θ0, early θk and θT);
* ``summary.json``  written last; its presence marks the run complete, so a finished run is skipped.

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so an interrupted
write never leaves a half-written file behind. One process at a time writes a run folder: :meth:`Run.lock` (a
``.lock`` file created with ``O_EXCL``, see :class:`RunLock`) makes a second process wait, then load the finished
run. ``load_results()`` collects every complete run into one tidy
DataFrame: one row per (run, evaluation split), one column per configuration field or metric.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional

import torch

from .maskbits import is_packed_mask, unpack_mask
from .paths import new_file_mode, results_root

if TYPE_CHECKING:
    import pandas

HASH_LENGTH = 12
SCHEMA_VERSION = 1


class ResultsError(RuntimeError):
    """A results file or checkpoint is missing, corrupt or inconsistent. The message names the file."""


class ResultsFormatError(ResultsError, ValueError):
    """A results file that loads but does not hold what it should (e.g. a mask of the wrong shapes)."""


def _canonical(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float):
        if math.isnan(obj):
            return "nan"
        return float(repr(obj)) if not obj.is_integer() else obj
    return obj


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable short hash of a JSON-able configuration (key order does not matter)."""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def _atomic_write(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(OSError):  # mkstemp's 0o600 would make the store unreadable to anyone else
                os.fchmod(f.fileno(), new_file_mode())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        check_lock_kept(path.parent)  # a writer whose lock was taken over must not overwrite its new owner's files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as JSON atomically (NaN written as null)."""
    text = json.dumps(_json_safe(obj), indent=1, sort_keys=True)
    return _atomic_write(Path(path), lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically."""
    return _atomic_write(Path(path), lambda f: torch.save(obj, f))


def atomic_copy(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file ``src`` to ``path`` atomically (byte for byte)."""
    data = Path(src).read_bytes()
    return _atomic_write(Path(path), lambda f: f.write(data))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def _non_finite(obj: Any, where: str = "") -> Optional[tuple[str, float]]:
    """The first (dotted key, value) of ``obj`` holding a NaN or infinite float, or ``None``."""
    if isinstance(obj, Mapping):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        value = obj.item() if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 0) == 0 else obj
        return (where, value) if isinstance(value, float) and not math.isfinite(value) else None
    for key, v in items:
        found = _non_finite(v, key)
        if found:
            return found
    return None


def _run_folder(path: Path) -> Optional[Path]:
    """The run folder (``<root>/runs/<run_id>``) that holds file ``path``, or ``None`` when it is not in one."""
    run_dir = Path(path).parent
    return run_dir if run_dir.parent.name == "runs" else None


def _trusted_config(run_dir: Path) -> Optional[dict]:
    """``run_dir``'s configuration when it reads as a mapping and hashes to the folder's name, else ``None``."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, Mapping) or config_hash(config) != Path(run_dir).name:
        return None
    return dict(config)


#: Files only a dense run keeps (θ0, early θk, θT, Ballot's streamed votes): they mark a dense run folder whose
#: configuration cannot be read.
_DENSE_FILES = ("theta0.pt", "thetaT.pt", "theta_e*.pt", "votes_*.pt")

#: The configuration fields a run shares with the dense run of its seed (every method starts from its weights).
_DENSE_KEY = ("version", "data", "model", "train", "seed")


def dense_run_id(config: Mapping[str, Any]) -> str:
    """The run id of the dense run that a run of ``config`` starts from (same data, model, recipe and seed)."""
    dense = {k: config[k] for k in _DENSE_KEY if k in config}
    return config_hash({**dense, "method": "dense", "method_cfg": {}})


def _sibling_configs(run_dir: Path) -> Iterable[tuple[Path, dict]]:
    """``(folder, configuration)`` of every other run folder next to ``run_dir`` whose config.json reads as a
    mapping (unreadable ones are skipped: ``check`` reports them)."""
    run_dir = Path(run_dir)
    if not run_dir.parent.is_dir():
        return
    for other in sorted(run_dir.parent.iterdir()):
        if other.name == run_dir.name or not other.is_dir():
            continue
        try:
            cfg = json.loads((other / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(cfg, Mapping):
            yield other, dict(cfg)


def is_dense_run(run_dir: str | os.PathLike) -> bool:
    """Whether ``run_dir`` is a seed's dense run: by its configuration when that is sound (it hashes to the folder's
    name), else by what only a dense run holds (θ0, θT, early θk, votes), else by another run of the store naming it
    as the dense run it started from. So a dense run whose config.json is truncated, replaced or deleted is still
    recognised (and :func:`repair_advice` and ``remove-derived`` agree on it)."""
    run_dir = Path(run_dir)
    config = _trusted_config(run_dir)
    if config is not None:
        return config.get("method") == "dense"
    if any(next(run_dir.glob(pattern), None) is not None for pattern in _DENSE_FILES):
        return True
    return any(cfg.get("method") != "dense" and dense_run_id(cfg) == run_dir.name
               for _, cfg in _sibling_configs(run_dir))


def repair_advice(path: str | os.PathLike) -> str:
    """What to do about a bad file of the store: the fix that works for that file.

    * a training checkpoint: delete it (the run restarts from its start);
    * a rewind point ``theta_e<k>.pt``: delete it (it is replayed from θ0 on demand);
    * Ballot's streamed votes ``votes_<hash>.pt``: delete it (an exact replay of the dense run streams them again);
    * any other file of a dense run (θ0, θT, metrics, its config.json, ...; see :func:`is_dense_run`): every method
      under that seed started from the dense run's weights, so remove the dense run *and* every run derived from
      it, with ``python -m ballot_lib.results remove-derived <run folder>``;
    * a file of any other run: remove that run's folder (it is recomputed on the next call).
    """
    path = Path(path)
    if path.name.startswith("checkpoint"):
        return f"delete {path} to start that run afresh"
    if path.name.startswith("theta_e"):
        return f"delete {path}: the rewind point is replayed from θ0 on demand"
    if path.name.startswith("votes_"):
        return (f"delete {path}: the votes are streamed again by an exact replay of the dense run (same seed, "
                "same data order) on the next call")
    run_dir = _run_folder(path)
    if run_dir is None:
        return "delete its run folder to recompute it"
    if path.name in ("theta0.pt", "thetaT.pt") or is_dense_run(run_dir):
        return (f"every run under this seed starts from this dense run's weights: remove the dense run and every "
                f"run derived from it with `python -m ballot_lib.results remove-derived {run_dir}` (deleting only "
                f"the file does not help: the run counts as complete), then run again")
    return f"remove the run folder {run_dir} (`rm -r {run_dir}`); it is recomputed on the next run"


def _is_metric_value(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _schema_problem(name: str, obj: Any) -> Optional[str]:
    """What is wrong with the content of the store's JSON file ``name`` (``None``: nothing, or not a store file)."""
    if name == "config.json":
        if not isinstance(obj, Mapping):
            return f"holds a {type(obj).__name__}, expected a mapping of configuration fields"
        if not isinstance(obj.get("method"), str):
            return f"has no method name (method: {obj.get('method')!r})"
        seed = obj.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            return f"has no valid seed (seed: {seed!r})"
        for key in ("method_cfg", "data", "model", "train"):
            if key in obj and not isinstance(obj[key], Mapping):
                return f"field {key!r} is a {type(obj[key]).__name__}, expected a mapping"
        density = obj.get("method_cfg", {}).get("density")
        if density is not None and not _is_metric_value(density):
            return f"field method_cfg.density is {density!r}, expected a number"
    elif name == "metrics.json":
        if not isinstance(obj, Mapping):
            return f"holds a {type(obj).__name__}, expected a mapping split -> {{metric: number}}"
        for split, values in obj.items():
            if not isinstance(values, Mapping):
                return f"split {split!r} holds {values!r}, expected a mapping metric -> number"
            for k, v in values.items():
                if not _is_metric_value(v):
                    return f"metric {split}.{k} is {v!r}, expected a number or null"
    elif name == "summary.json":
        if not isinstance(obj, Mapping):
            return f"holds a {type(obj).__name__}, expected a mapping"
        for key in ("density", "seconds", "train_epochs", "compute_epochs"):
            if key in obj and not _is_metric_value(obj[key]):
                return f"field {key!r} is {obj[key]!r}, expected a number"
    elif name == "history.json":
        if not isinstance(obj, list) or not all(isinstance(row, Mapping) for row in obj):
            return "expected a list of per-epoch mappings"
        for i, row in enumerate(obj):
            for k, v in row.items():
                # per-epoch numbers (metrics, lr, epoch) or a phase label
                if not (_is_metric_value(v) or (k == "phase" and isinstance(v, str))):
                    return f"row {i} field {k!r} is {v!r}, expected a number or null"
    return None


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON results file; a missing, corrupt or malformed file raises :class:`ResultsError` naming it.

    The store's own files (in ``runs/<run_id>/``) are schema-checked: ``config.json`` (a mapping with ``method`` and ``seed``),
    ``metrics.json`` (split -> metric -> number or null), ``summary.json`` (a mapping) and ``history.json`` (a list
    of mappings). The message says what is wrong and the fix that works (:func:`repair_advice`).
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        fix = f"; {repair_advice(path)}" if _run_folder(path) is not None and path.parent.is_dir() else ""
        raise ResultsError(f"results file {path} does not exist{fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"results file {path} is corrupt ({e}); {repair_advice(path)}") from None
    problem = _schema_problem(path.name, obj) if path.parent.parent.name == "runs" else None
    if problem:
        raise ResultsFormatError(f"results file {path} is malformed ({problem}); {repair_advice(path)}")
    return obj


def check_config_file(run_dir: str | os.PathLike) -> dict:
    """Read ``<run_dir>/config.json`` and check that its hash is the folder's name; return the configuration.

    A configuration copied from another run (or edited by hand) would silently mislabel every result of the
    folder: it raises :class:`ResultsError` naming the file.
    """
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    actual = config_hash(config)
    if actual != run_dir.name:
        raise ResultsFormatError(
            f"results file {run_dir / 'config.json'} holds the configuration of run {actual}, not of its folder "
            f"{run_dir.name} (copied from another run or edited); {repair_advice(run_dir / 'config.json')}")
    return config


#: Splits every complete run is evaluated on (``training.train``'s default ``eval_splits``).
EVALUATED_SPLITS = ("val", "test")


def required_files(config: Mapping[str, Any]) -> list[str]:
    """The files a complete run of ``config`` must hold: its metrics, summary and per-epoch history, and the mask
    for every method but the dense run."""
    files = ["metrics.json", "summary.json", "history.json"]
    return files + ([] if config.get("method") == "dense" else ["mask.pt"])


def check_complete(run_dir: str | os.PathLike, config: Mapping[str, Any]) -> dict:
    """Raise :class:`ResultsError` naming the first file a complete run lacks (:func:`required_files`), or a
    ``metrics.json`` without an evaluated split (:data:`EVALUATED_SPLITS`), with the fix for that file; return
    the metrics it read (so callers do not read them again).

    A deleted mask must not pass for a dense model (density 1), nor a lost test split for a run never evaluated."""
    run_dir = Path(run_dir)
    for name in required_files(config):
        if not (run_dir / name).is_file():
            raise ResultsError(f"results file {run_dir / name} does not exist; {repair_advice(run_dir / name)} "
                               f"(run {run_dir.name} is marked complete, and a complete {config.get('method')} run "
                               f"holds {', '.join(required_files(config))})")
    metrics = read_json(run_dir / "metrics.json")
    missing = [s for s in EVALUATED_SPLITS if s not in metrics]
    if missing:
        raise ResultsFormatError(f"results file {run_dir / 'metrics.json'} has no {', '.join(missing)} split "
                                 f"(found: {', '.join(metrics) or 'none'}); {repair_advice(run_dir / 'metrics.json')}")
    return metrics


def safe_torch_load(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with clear errors for missing, truncated or foreign files."""
    path = Path(path)
    if not path.is_file():
        fix = f"; {repair_advice(path)}" if _run_folder(path) is not None and path.parent.is_dir() else ""
        raise ResultsError(f"{what} file {path} does not exist{fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with forbidden globals, ...
        raise ResultsError(
            f"{what} file {path} is corrupt or not a weights-only torch file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); {repair_advice(path)}"
        ) from None


#: Longest interval between heart-beats of a held lock (the beat runs at a third of the stale time when that is
#: shorter, see :func:`lock_heartbeat_s`).
LOCK_HEARTBEAT_S = 30.0
#: Shortest stale time accepted from ``$BALLOT_LOCK_STALE_S``: a live holder must beat well within it.
LOCK_STALE_MIN_S = 5.0
#: An empty or unreadable lock file (its creator died between creating and writing it, or it was truncated) is stale
#: once untouched for this long (or :data:`LOCK_STALE_S`, if shorter): a live holder writes its host and pid right
#: after creating the file and touches it at least every :data:`LOCK_HEARTBEAT_S` seconds.
LOCK_UNREADABLE_STALE_S = 60.0
#: A process that has waited this long for a lock says so, once, on stderr (naming the lock file and the fix).
LOCK_NOTICE_S = 2.0


def _parse_stale_s(text: Optional[str]) -> tuple[float, Optional[str]]:
    """``$BALLOT_LOCK_STALE_S`` as (seconds, None), or (the default, the error to raise when a lock is used)."""
    if text is None or not text.strip():
        return 600.0, None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not LOCK_STALE_MIN_S <= value < math.inf:
        return 600.0, (f"$BALLOT_LOCK_STALE_S={text!r} is not a usable lock stale time: set it to a number of "
                       f"seconds >= {LOCK_STALE_MIN_S:g} (default 600; on NFS well above its attribute-cache time) "
                       f"or unset it")
    return value, None


#: The age without a heart-beat after which a lock counts as stale (its holder gone): ``$BALLOT_LOCK_STALE_S``,
#: default 600, at least :data:`LOCK_STALE_MIN_S` (another value makes taking a lock a :class:`ResultsError`).
LOCK_STALE_S, _LOCK_STALE_ERROR = _parse_stale_s(os.environ.get("BALLOT_LOCK_STALE_S"))


def lock_heartbeat_s() -> float:
    """Seconds between heart-beats of a held lock: a third of :data:`LOCK_STALE_S`, at most
    :data:`LOCK_HEARTBEAT_S`, so that a live holder's lock never looks stale."""
    return min(LOCK_HEARTBEAT_S, LOCK_STALE_S / 3)


class LockTimeout(ResultsError):
    """Another live process held a run folder's lock for longer than the caller was willing to wait."""


class LockLost(ResultsError):
    """This process held a run folder's lock, but another process took it over (this one was paused, e.g. by
    Ctrl-Z or a cluster's job suspension, for longer than the stale time): it must stop writing that folder."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """One writer per run folder: an exclusive ``.lock`` file, re-entrant within one thread.

    * Acquire: ``os.open(..., O_CREAT | O_EXCL)`` of ``<run>/.lock``, which is atomic on local filesystems and
      on NFSv3+/Lustre/GPFS as used by Slurm clusters. The file holds ``host pid token`` (the token is new for each
      acquisition); while held, a background thread touches it every :func:`lock_heartbeat_s` seconds (a third of
      the stale time, at most :data:`LOCK_HEARTBEAT_S`).
    * Release removes the file only while it still holds this acquisition's token: a lock taken over meanwhile
      (judged stale by another process) is left to its new owner.
    * Wait: a second process polls until the lock is released (then the caller finds the run complete and loads
      it), or raises :class:`LockTimeout` after ``timeout`` seconds (``None`` = wait for ever). After
      :data:`LOCK_NOTICE_S` seconds it says once on stderr what it waits for and how to clear a stale lock.
    * Stale rule: a lock is taken over when its holder is dead — on the same host, its pid no longer exists, or
      its heart-beat is older than :data:`LOCK_STALE_S` seconds (``$BALLOT_LOCK_STALE_S``, default 600: a pid
      reused after a restart), or it names this process's pid while no thread of this process holds it; on
      another host (no way to check the pid), its heart-beat is older than :data:`LOCK_STALE_S`; an empty or
      unreadable lock file, once untouched for :data:`LOCK_UNREADABLE_STALE_S` seconds. Take-over itself is
      serialised by a second ``O_EXCL`` file (``.lock.takeover``), so two waiters never both take over.
    """

    _held: dict[tuple[str, int], int] = {}  # (path, thread) -> depth: re-entrant within one thread only
    _owned: dict[tuple[str, int], tuple[str, threading.Event]] = {}  # (path, thread) -> (token, heart-beat stop)
    _guard = threading.Lock()

    def __init__(self, folder: Path, timeout: Optional[float] = None, poll: float = 0.2,
                 heartbeat: bool = True) -> None:
        self.folder = Path(folder)
        self.path = self.folder / ".lock"
        self.timeout = timeout
        self.poll = poll
        self.heartbeat = heartbeat  # False only for a hold far shorter than the stale time (no beating thread)

    def _owner(self) -> Optional[tuple[str, int, float, Optional[str]]]:
        """``(host, pid, mtime, token)`` of the lock file (token ``None`` in a file without one); ``None`` when it
        is missing, empty or unreadable."""
        try:
            text = self.path.read_text().split()
            mtime = self.path.stat().st_mtime
            return text[0], int(text[1]), mtime, (text[2] if len(text) > 2 else None)
        except (FileNotFoundError, IndexError, ValueError, UnicodeDecodeError):
            return None

    def _stale(self) -> bool:
        owner = self._owner()
        if owner is None:
            # Empty or unreadable (its creator died before writing it, or it was truncated): judged by its age.
            try:
                return time.time() - self.path.stat().st_mtime > min(LOCK_STALE_S, LOCK_UNREADABLE_STALE_S)
            except FileNotFoundError:
                return False
        host, pid, mtime, _ = owner
        old = time.time() - mtime > LOCK_STALE_S  # no heart-beat for that long: its holder is gone
        if host == socket.gethostname():
            if pid == os.getpid():  # ours only if a thread of this process holds it; else a reused pid's leftover
                with RunLock._guard:
                    return not any(k[0] == str(self.path) for k in RunLock._held)
            # A dead pid is stale at once; a live one whose heart-beat stopped long ago is a reused pid (after a
            # restart, pids repeat)
            return not _pid_alive(pid) or old
        return old

    def _try_create(self, token: str) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except FileNotFoundError:  # the empty folder was just removed by a releasing process: make it again
            self.folder.mkdir(parents=True, exist_ok=True)
            return False
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()} {token}\n")
        return True

    def _create_and_hold(self, key: tuple[str, int], token: str) -> bool:
        """Create the lock file and record it as held, as one step for the threads of this process (another
        thread's stale check then never sees this process's pid in the file without the record)."""
        with RunLock._guard:
            if not self._try_create(token):
                return False
            RunLock._held[key] = 1
            return True

    def _take_over(self) -> None:
        guard = self.folder / ".lock.takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            # Someone else is taking over; a guard left by a killed process is removed once old.
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > 60:
                    guard.unlink()
            return
        os.close(fd)
        try:
            if self._stale():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                guard.unlink()

    def _waiting_notice(self) -> str:
        owner = self._owner()
        if owner is not None:
            who = f"{owner[0]} pid {owner[1]}"
        else:
            who = (f"an empty or unreadable lock file (taken over once untouched for "
                   f"{min(LOCK_STALE_S, LOCK_UNREADABLE_STALE_S):.0f} s)")
        return (f"waiting for run folder {self.folder}: locked by {who} (lock file {self.path}); if no process is "
                f"running this run, delete {self.path}")

    def acquire(self) -> "RunLock":
        import sys
        import uuid

        if _LOCK_STALE_ERROR:
            raise ResultsError(_LOCK_STALE_ERROR)
        key = (str(self.path), threading.get_ident())
        with RunLock._guard:
            if key in RunLock._held:
                RunLock._held[key] += 1
                return self
        self.folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        t0 = time.monotonic()
        noticed = False
        while not self._create_and_hold(key, token):
            if self._stale():
                self._take_over()
                if self._create_and_hold(key, token):
                    break
            # Every turn of the loop waits and checks the time-out (a take-over that another waiter is doing, or
            # whose guard a killed waiter left, must not make this loop spin)
            waited = time.monotonic() - t0
            if self.timeout is not None and waited > self.timeout:
                owner = self._owner()
                raise LockTimeout(f"run folder {self.folder} is locked by {owner[:2] if owner else 'another process'}"
                                  f" (file {self.path}); waited {self.timeout:.0f} s. If no process is running this"
                                  f" run, delete {self.path}")
            if not noticed and waited >= LOCK_NOTICE_S:
                print(self._waiting_notice(), file=sys.stderr, flush=True)
                noticed = True
            time.sleep(self.poll)
        stop = threading.Event()
        with RunLock._guard:
            RunLock._owned[key] = (token, stop)
        if self.heartbeat:
            threading.Thread(target=self._beat, args=(token, stop, lock_heartbeat_s()), daemon=True).start()
        return self

    def _beat(self, token: str, stop: threading.Event, interval: float) -> None:
        import sys

        while not stop.wait(interval):
            owner = self._owner()
            if owner is not None and owner[3] != token:
                if not stop.is_set():
                    print(f"warning: the lock {self.path} was taken over by {owner[0]} pid {owner[1]} while this "
                          f"process held it (no heart-beat seen for {LOCK_STALE_S:.0f} s): another process may be "
                          f"writing run folder {self.folder}", file=sys.stderr, flush=True)
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def kept(self) -> bool:
        """Whether the lock file still holds a token this process acquired (``True`` when it holds none).

        Best effort: checked right before a write, so a take-over in between is not seen; a lock file that cannot
        be read for another reason than its absence (an NFS hiccup) counts as kept rather than failing a write."""
        with RunLock._guard:
            tokens = {token for (path, _), (token, _) in RunLock._owned.items() if path == str(self.path)}
        if not tokens:
            return True
        try:
            owner = self._owner()
        except OSError:
            return True
        return owner is not None and owner[3] in tokens

    def release(self) -> None:
        key = (str(self.path), threading.get_ident())
        with RunLock._guard:
            depth = RunLock._held.get(key, 0)
            if depth > 1:
                RunLock._held[key] = depth - 1
                return
            RunLock._held.pop(key, None)
            token, stop = RunLock._owned.pop(key, (None, None))
        if stop is not None:
            stop.set()
        owner = self._owner()
        if token is not None and owner is not None and owner[3] == token:  # still ours: not taken over meanwhile
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        # A run that wrote nothing (e.g. failed validation) leaves no empty folder behind.
        with contextlib.suppress(OSError):
            self.folder.rmdir()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_lock_kept(folder: Path) -> None:
    """Raise :class:`LockLost` if this process acquired ``folder``'s lock and another process has taken it over
    since (checked before every atomic write and before a run is finished: nothing of the new owner's is
    overwritten or deleted). A folder this process holds no lock on passes."""
    lock = RunLock(folder, heartbeat=False)
    if not lock.kept():
        owner = lock._owner()
        who = f"{owner[0]} pid {owner[1]}" if owner else "another process (which has released it since)"
        raise LockLost(f"the lock of run folder {folder} was taken over by {who} while this process held it (no "
                       f"heart-beat for {LOCK_STALE_S:.0f} s: was this process paused?); it stops writing that "
                       f"folder. Run the same call again: it loads (or resumes) the other process's run")


class Run:
    """One run folder of the store."""

    def __init__(self, store: "ResultsStore", config: Mapping[str, Any]) -> None:
        self.store = store
        bad = _non_finite(config)
        if bad:  # JSON has no NaN/inf: they would be stored (and hashed) as null, i.e. as another run's config
            raise ValueError(f"run configuration entry {bad[0]} = {bad[1]!r} is not a finite number; a run's "
                             f"options must be finite (NaN and inf would share the run id of the option left unset)")
        self.config = _json_safe(dict(config))
        self.id = config_hash(self.config)
        self.path = store.runs_dir / self.id

    def __repr__(self) -> str:
        return f"Run({self.id}, method={self.config.get('method')!r}, path={str(self.path)!r})"

    @property
    def complete(self) -> bool:
        return (self.path / "summary.json").is_file()

    def file(self, name: str) -> Path:
        return self.path / name

    def lock(self, timeout: Optional[float] = None) -> RunLock:
        """The folder's writer lock (a context manager): ``with run.lock(): ...`` (see :class:`RunLock`)."""
        return RunLock(self.path, timeout=timeout)

    def remove_partial_writes(self) -> None:
        """Delete temporary files that a writer killed during an atomic write left (``.<name>.<random>.tmp``).
        Called by :meth:`start` and :meth:`finish`, which run under the folder's lock: no other writer exists."""
        for tmp in self.path.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def start(self) -> "Run":
        """Create the folder and write ``config.json`` (checks an existing folder holds the same config)."""
        self.remove_partial_writes()
        cfg_file = self.path / "config.json"
        if cfg_file.is_file():
            existing = read_json(cfg_file)
            if config_hash(existing) != self.id:
                raise ResultsError(f"{cfg_file} holds a different configuration than its folder name says")
        else:
            atomic_write_json(self.config, cfg_file)
        return self

    def write_json(self, name: str, obj: Any) -> Path:
        return atomic_write_json(obj, self.path / name)

    def read_json(self, name: str) -> Any:
        return read_json(self.path / name)

    def save_tensor(self, name: str, obj: Any) -> Path:
        return atomic_torch_save(obj, self.path / name)

    def load_tensor(self, name: str, what: str = "weights") -> Any:
        return safe_torch_load(self.path / name, what=what)

    def finish(self, summary: Mapping[str, Any]) -> None:
        """Mark the run complete: remove in-progress checkpoints and write ``summary.json`` last."""
        check_lock_kept(self.path)
        for ckpt in self.path.glob("checkpoint*.pt"):
            ckpt.unlink()
        self.remove_partial_writes()
        self.write_json("summary.json", dict(summary))


class ResultsStore:
    """A folder of runs. ``ResultsStore()`` uses ``$BALLOT_RESULTS`` or ``./results``."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = results_root(root)
        self.runs_dir = self.root / "runs"

    def __repr__(self) -> str:
        return f"ResultsStore({str(self.root)!r})"

    def run(self, config: Mapping[str, Any]) -> Run:
        return Run(self, config)

    def complete_runs(self) -> list[Path]:
        if not self.runs_dir.is_dir():
            return []
        return sorted(p for p in self.runs_dir.iterdir() if (p / "summary.json").is_file())


def _flatten(prefix: str, obj: Any, out: dict) -> None:
    """Flatten nested dicts into dotted keys; lists become JSON strings so every cell is a scalar."""
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            _flatten(key + ".", v, out)
        else:
            out[key] = json.dumps(v) if isinstance(v, list) else v


def run_rows(run_dir: Path) -> list[dict]:
    """Rows of one complete run for :func:`load_results` (one per evaluated split).

    Every file is checked as it is read (schema, config hash against the folder name): a bad one raises
    :class:`ResultsError` naming it.
    """
    run_dir = Path(run_dir)
    config = check_config_file(run_dir)
    metrics = check_complete(run_dir, config)
    summary = read_json(run_dir / "summary.json")
    base: dict[str, Any] = {"run_id": run_dir.name}
    flat: dict[str, Any] = {}
    _flatten("", config, flat)
    base.update(flat)
    # Scalar summary fields (density, compute, timings, method diagnostics) become columns too.
    for k, v in summary.items():
        if k not in base and not isinstance(v, (list, dict)):
            base[k] = v
    # Convenience columns: what the run is, the requested density, and the density its mask actually has.
    base["dataset"] = config.get("data", {}).get("name")
    base["model"] = config.get("model", {}).get("name")
    base["variant"] = config.get("method")
    base["density_target"] = float(config.get("method_cfg", {}).get("density", 1.0))
    base["density"] = summary.get("density", base["density_target"])
    base["sparsity"] = None if base["density"] is None else 1.0 - base["density"]
    rows = []
    for split, values in metrics.items():
        row = dict(base)
        row["split"] = split
        row.update({k: (float("nan") if v is None else v) for k, v in values.items()})
        rows.append(row)
    return rows


def load_results(root: str | os.PathLike | None = None, on_error: str = "raise") -> "pandas.DataFrame":
    """Every complete run as a tidy DataFrame: one row per (run, split), one column per config field or metric.

    Config fields are flattened with dots (``data.name``, ``train.epochs``, ``method_cfg.density``); convenience
    columns ``method``, ``dataset``, ``model``, ``seed``, ``density`` and ``sparsity`` are always present.
    ``on_error="skip"`` skips (with a warning) runs whose files are corrupt instead of raising.
    """
    import warnings

    import pandas as pd

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    store = _existing_store(root)
    rows: list[dict] = []
    for run_dir in store.complete_runs():
        try:
            rows.extend(run_rows(run_dir))
        except ResultsError as e:
            if on_error == "raise":
                raise
            warnings.warn(f"skipping run {run_dir.name}: {e}", stacklevel=2)
    if not rows:
        return pd.DataFrame(columns=["run_id", "method", "dataset", "model", "seed", "density", "sparsity", "split"])
    return pd.DataFrame(rows)


def _existing_store(root: str | os.PathLike | None) -> "ResultsStore":
    """The store at ``root`` for reading; a root that is not a folder (a typo, a file) raises :class:`ResultsError`
    naming it instead of reading as a store without runs. A folder without ``runs/`` yet is an empty store."""
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ResultsError(f"root must be a results folder (a path) or None, got {type(root).__name__} {root!r}")
    store = ResultsStore(root)
    if not store.root.is_dir():
        what = "a file" if store.root.exists() else "no such folder"
        raise ResultsError(f"results store {store.root}: {what}; give the results root that holds runs/ "
                           f"(default $BALLOT_RESULTS or ./results)")
    return store


def load_history(root: str | os.PathLike | None = None, run_ids: Optional[Iterable[str]] = None) -> "pandas.DataFrame":
    """Per-epoch metrics of complete runs: one row per (run, phase, epoch)."""
    import pandas as pd

    store = _existing_store(root)
    wanted = None if run_ids is None else set(run_ids)
    frames = []
    for run_dir in store.complete_runs():
        if wanted is not None and run_dir.name not in wanted:
            continue
        hist_file = run_dir / "history.json"
        config = check_config_file(run_dir)  # the folder's own configuration (hash-checked), as load_results
        check_complete(run_dir, config)  # a lost history.json raises, naming it (a run is not skipped silently)
        h = pd.DataFrame(read_json(hist_file))
        h["run_id"] = run_dir.name
        h["method"] = config.get("method")
        h["seed"] = config.get("seed")
        frames.append(h)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------------------ repair


#: Files the store itself keeps in a run folder that are not results (the writer lock).
_HOUSEKEEPING = (".lock", ".lock.takeover")


@contextlib.contextmanager
def discard_if_unstarted(run: "Run"):
    """On an error inside the block, remove the run's ``config.json`` if it is all the run wrote (a run that
    failed before producing anything leaves no folder behind; the lock's release removes the empty folder)."""
    try:
        yield
    except BaseException as e:
        if isinstance(e, LockLost) or not RunLock(run.path, heartbeat=False).kept():
            raise  # the folder is another process's now: its config.json is not ours to remove
        files = {p.name for p in run.path.iterdir()} - set(_HOUSEKEEPING) if run.path.is_dir() else set()
        if files == {"config.json"}:
            with contextlib.suppress(FileNotFoundError):
                run.file("config.json").unlink()
        raise


def derived_runs(run_dir: str | os.PathLike) -> list[Path]:
    """The run folder ``run_dir`` and every run of the same store that shares its data, model, recipe and seed.

    For a dense run these are the runs derived from it: every method under a seed starts from that seed's dense
    θ0/θT. A run matches when its configuration names ``run_dir`` as its dense run (:func:`dense_run_id`) or, when
    ``run_dir``'s own configuration is sound, shares those fields with it; so the runs of a dense run whose
    config.json is corrupt or missing are found too. Runs whose ``config.json`` cannot be read are not matched
    (they are reported by ``check``).
    """
    run_dir = Path(run_dir).resolve()
    config = _trusted_config(run_dir)
    key = None if config is None else {k: config.get(k) for k in _DENSE_KEY}
    out = [run_dir]
    for other, cfg in _sibling_configs(run_dir):
        if dense_run_id(cfg) == run_dir.name or (key is not None and {k: cfg.get(k) for k in key} == key):
            out.append(other)
    return out


def _check_dense_folder(run_dir: Path) -> None:
    """Refuse (:class:`ResultsError`) anything but a dense run folder of a store, saying what is accepted."""
    if not run_dir.is_dir() or run_dir.resolve().parent.name != "runs":
        raise ResultsError(f"{run_dir} is not a run folder of a results store (expected <results root>/runs/<run id>)")
    if is_dense_run(run_dir):
        return
    config = _trusted_config(run_dir)
    kind = (f"a run of method {config.get('method')!r}" if config is not None else
            "not recognisable as a dense run (its config.json is unreadable and it holds no theta0.pt/thetaT.pt)")
    raise ResultsError(
        f"{run_dir} is {kind}, not a dense run: remove-derived takes only a seed's dense run (method 'dense', or "
        f"with an unreadable config.json a folder holding theta0.pt or thetaT.pt) and removes it with every run "
        f"derived from it; to remove this run alone (it is recomputed on the next run): rm -r {run_dir}")


def remove_derived(run_dir: str | os.PathLike, dry_run: bool = False) -> list[Path]:
    """Remove the dense run ``run_dir`` and every run derived from it (see :func:`derived_runs`); return the folders
    (the dense run last).

    Anything but a dense run folder (:func:`is_dense_run`) is refused with :class:`ResultsError`, and so is a set
    of folders of which one is locked by a live process (its writer would recreate it half-written); nothing is
    removed then. Every folder is first moved out of ``runs/`` (into ``<root>/.removing/``, the dense run last)
    and only then deleted, so a removal killed midway leaves each run either whole in place or gone, and running
    the command again completes it.
    """
    import shutil
    import uuid

    run_dir = Path(run_dir)
    _check_dense_folder(run_dir)
    found = derived_runs(run_dir)
    folders = found[1:] + found[:1]  # the dense run last: a removal killed midway can be run again
    if dry_run:
        return folders
    trash = found[0].parent.parent / ".removing"
    locks: list[RunLock] = []
    moved: list[Path] = []
    try:
        for f in folders:
            locks.append(RunLock(f, timeout=0, heartbeat=False).acquire())  # held for a few renames only
        trash.mkdir(exist_ok=True)
        for f in folders:
            dest = trash / f"{f.name}.{uuid.uuid4().hex[:8]}"
            os.rename(f, dest)
            moved.append(dest)
    finally:
        for lock in locks:
            lock.release()
    for d in list(trash.iterdir()) if trash.is_dir() else []:  # these, and any left by a removal killed earlier
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        trash.rmdir()
    return folders


# ------------------------------------------------------------------------------------------ check


def _tensor_dict_problem(obj: Any) -> Optional[str]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        return f"it holds a {type(obj).__name__}, not a mapping name -> tensor"
    return None


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _fits(shapes: Mapping[str, tuple[int, ...]], reference: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """What is wrong with tensors of ``shapes`` that should be weights of a model with state ``reference``."""
    extra = sorted(set(shapes) - set(reference))
    if extra:
        return f"its tensors {extra[:5]} are not weights of the dense run's model"
    bad = [f"{k} {shapes[k]} (model: {reference[k]})" for k in sorted(shapes) if shapes[k] != reference[k]]
    return f"wrong shapes {bad[:5]}" if bad else None


def _state_fits(shapes: Mapping[str, tuple[int, ...]], reference: Mapping[str, tuple[int, ...]]) -> Optional[str]:
    """:func:`_fits`, and a full state: no tensor of ``reference`` missing."""
    missing = sorted(set(reference) - set(shapes))
    return _fits(shapes, reference) or (f"missing {missing[:5]}" if missing else None)


class _DenseReference:
    """Per dense run id: the names and shapes of its stored weights (``None`` when they cannot be told), and the
    problems of its weights files (files that disagree with the others)."""

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self._cache: dict[str, tuple[Optional[dict], dict[str, str]]] = {}

    def get(self, dense_id: str) -> tuple[Optional[dict], dict[str, str]]:
        if dense_id not in self._cache:
            self._cache[dense_id] = self._compute(self.runs_dir / dense_id)
        return self._cache[dense_id]

    @staticmethod
    def _compute(folder: Path) -> tuple[Optional[dict], dict[str, str]]:
        signatures: dict[Path, dict] = {}
        for name in ["theta0.pt", "thetaT.pt"] + sorted(p.name for p in folder.glob("theta_e*.pt")):
            try:
                state = safe_torch_load(folder / name, what="weights")
            except ResultsError:
                continue  # missing or corrupt: reported by the file's own check
            if _tensor_dict_problem(state) is None:
                signatures[folder / name] = _shapes(state)
        groups: list[tuple[dict, list[Path]]] = []
        for path, sig in signatures.items():
            for ref, members in groups:
                if ref == sig:
                    members.append(path)
                    break
            else:
                groups.append((sig, [path]))
        if not groups:
            return None, {}
        groups.sort(key=lambda g: -len(g[1]))
        if len(groups) == 1:
            return groups[0][0], {}
        if len(groups[0][1]) > len(groups[1][1]):  # a majority: the odd files are the bad ones
            ref = groups[0][0]
            return ref, {str(p): f"its tensors do not match the dense run's other weights files "
                                 f"({_state_fits(sig, ref)})" for sig, members in groups[1:] for p in members}
        names = ", ".join(p.name for _, members in groups for p in members)
        return None, {str(p): f"the dense run's weights files disagree on names or shapes ({names})"
                      for _, members in groups for p in members}


def _check_tensor_file(path: Path, reference: Optional[dict], dense_problems: Mapping[str, str]) -> None:
    """Load a ``.pt`` file of a run folder weights-only and check what it holds, by its kind (raises)."""
    name = path.name
    what = ("mask" if name.endswith("mask.pt") else "Ballot votes" if name.startswith("votes_") else
            "training checkpoint" if name.startswith("checkpoint") else "weights")
    obj = safe_torch_load(path, what=what)
    problem = None
    if what == "mask":
        if is_packed_mask(obj):  # save_mask's bit-packed format: check it, then its tensors as a plain mask's
            try:
                obj = unpack_mask(obj)
            except ValueError as e:
                raise ResultsFormatError(f"{what} file {path} is malformed ({e}); {repair_advice(path)}") from None
    if what == "mask" or name.startswith("theta") or name.endswith("_weights.pt"):
        problem = _tensor_dict_problem(obj)
        if problem and what == "mask":
            problem = "it does not hold a mask (a dict of tensors)"
        elif problem is None and str(path) in dense_problems:
            problem = dense_problems[str(path)]
        elif problem is None and reference is not None:
            problem = (_fits if what == "mask" else _state_fits)(_shapes(obj), reference)
    elif what == "Ballot votes":
        if not isinstance(obj, Mapping) or any(k not in obj for k in ("votes", "total", "epochs")):
            problem = "expected a mapping with votes, total and epochs"
        else:
            for key in ("votes", "total"):
                wrong = _tensor_dict_problem(obj[key])
                if wrong is None and reference is not None:
                    wrong = _fits(_shapes(obj[key]), reference)
                if wrong:
                    problem = f"{key!r}: {wrong}"
                    break
    elif what == "training checkpoint":
        if not isinstance(obj, Mapping) or any(k not in obj for k in ("net", "epoch")):
            problem = "expected a training checkpoint (a mapping with net, opt, epoch, ...)"
    if problem:
        raise ResultsFormatError(f"{what} file {path} is malformed ({problem}); {repair_advice(path)}")


def unfinished_runs(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The run folders of a store that hold no ``summary.json``: each with its ``folder``, ``method``, ``seed``,
    ``bytes`` on disk (checkpoints, per-level weights, ... of a run killed and never resumed stay until it is), and
    whether a live process holds its lock (``running``, ``holder``). Read-only; a folder that only holds its lock
    (a run just starting) is left out."""
    store = ResultsStore(root)
    out: list = []
    if not store.runs_dir.is_dir():
        return out
    for run_dir in sorted(p for p in store.runs_dir.iterdir() if p.is_dir()):
        files = [f for f in run_dir.iterdir() if f.is_file()]
        if (run_dir / "summary.json").exists() or not any(f.name not in _HOUSEKEEPING for f in files):
            continue  # complete, or a run just starting (its lock only); a killed write's .tmp file counts
        try:
            config = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        lock = RunLock(run_dir, heartbeat=False)
        owner = lock._owner()
        running = lock.path.exists() and not lock._stale()
        out.append({"folder": run_dir, "method": config.get("method", "?"), "seed": config.get("seed", "?"),
                    "bytes": sum(f.stat().st_size for f in files), "running": running,
                    "holder": f"{owner[0]} pid {owner[1]}" if owner else ""})
    return out


def check_run(run_dir: str | os.PathLike, _dense: Optional[_DenseReference] = None) -> list[str]:
    """Read every file of one run folder that the store knows, as the loaders do; one message per bad file.

    ``config.json`` (schema, hash against the folder's name), ``metrics.json``, ``summary.json``, ``history.json``
    and any other ``*.json`` (schema where it has one); every ``*.pt`` loaded weights-only: masks are dicts of
    tensors, weights (θ0, θk, θT, LTH's per-level weights) dicts of tensors whose names and shapes agree with the
    seed's dense run, Ballot's votes hold votes/total/epochs of those shapes, training checkpoints hold their
    state. A complete run is then read as :func:`load_results` reads it. Files the store writes for itself (the
    lock, temporary files of an interrupted write) are skipped. Every message names the file and the fix.
    """
    run_dir = Path(run_dir)
    dense = _dense or _DenseReference(run_dir.parent)
    problems: list[str] = []

    def attempt(fn, *args) -> bool:
        try:
            fn(*args)
            return True
        except ResultsError as e:
            problems.append(str(e))
            return False

    config = _trusted_config(run_dir)
    attempt(check_config_file, run_dir)
    complete = (run_dir / "summary.json").is_file()
    if complete:
        for name in ("metrics.json", "summary.json"):
            attempt(read_json, run_dir / name)
        if config is not None and not problems:
            attempt(check_complete, run_dir, config)
    files = sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    for p in files:
        if p.suffix == ".json" and p.name not in ("config.json", "metrics.json", "summary.json"):
            attempt(read_json, p)
    dense_id = run_dir.name if config is None or config.get("method") == "dense" else dense_run_id(config)
    reference, dense_problems = dense.get(dense_id) if (run_dir.parent / dense_id).is_dir() else (None, {})
    for p in files:
        if p.suffix == ".pt":
            attempt(_check_tensor_file, p, reference, dense_problems)
    if complete and not problems:
        attempt(run_rows, run_dir)
    return problems


def check_store(root: str | os.PathLike | None = None) -> list[str]:
    """Read every file of every run of a store (see :func:`check_run`); return one message per bad file.

    A folder that is not a results store (it has no ``runs/`` folder) raises :class:`ResultsError` naming it.
    """
    return [msg for _, problems in _check_runs(root) for msg in problems]


def _check_runs(root: str | os.PathLike | None) -> list[tuple[Path, list[str]]]:
    store = ResultsStore(root)
    if not store.runs_dir.is_dir():
        raise ResultsError(f"{store.root} is not a results store (it has no runs/ folder): give the results root "
                           f"that holds runs/ (default $BALLOT_RESULTS or ./results)")
    dense = _DenseReference(store.runs_dir)
    out = []
    for run_dir in sorted(p for p in store.runs_dir.iterdir() if p.is_dir()):
        if not any(not f.name.startswith(".") for f in run_dir.iterdir()):
            continue  # a run that is just starting (its lock only)
        out.append((run_dir, check_run(run_dir, dense)))
    return out


def main(argv: Optional[Iterable[str]] = None) -> int:
    """``python -m ballot_lib.results check [ROOT]`` or ``remove-derived RUN_DIR [--dry-run]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m ballot_lib.results", description="Check or repair a results store.")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="read every file of every run and report the bad ones")
    c.add_argument("root", nargs="?", default=None, help="results root (default: $BALLOT_RESULTS or ./results)")
    r = sub.add_parser("remove-derived", help="remove a dense run folder and every run derived from it")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--dry-run", action="store_true", help="only list the folders")
    a = p.parse_args(None if argv is None else list(argv))
    try:
        if a.cmd == "check":
            checked = _check_runs(a.root)
            bad = [(run_dir, problems) for run_dir, problems in checked if problems]
            for _, problems in bad:
                for msg in problems:
                    print(msg)
            print(f"{len(bad)} bad run(s) of {len(checked)} in {ResultsStore(a.root).root}")
            for u in unfinished_runs(a.root):
                state = (f"running ({u['holder']})" if u["running"] else
                         "not running: re-run the same call to resume it, or delete the folder")
                print(f"unfinished: {u['folder']} ({u['method']}, seed {u['seed']}, {u['bytes'] / 1e6:,.1f} MB): "
                      f"{state}")
            return 1 if bad else 0
        folders = remove_derived(a.run_dir, dry_run=a.dry_run)
        for f in folders:
            print(("would remove " if a.dry_run else "removed ") + str(f))
        return 0
    except ResultsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
