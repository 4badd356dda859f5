"""``python -m lightning_mbo data download TASK``: a task's files from design-bench's data mirror.

design-bench's own server (``SERVER_URL``, ``design_bench/disk_resource.py``) is gone; its data
directory lives on as the Hugging Face dataset ``beckhamc/design_bench_data``, in design-bench's
own layout, which is what lightning_mbo reads (``--data.data_dir`` or ``$LIGHTNING_MBO_DATA_DIR``):

* the shards ``<folder>/<prefix>-{x,y}-<i>.npy`` of every task (:mod:`lightning_mbo.tasks.registry`);
* Superconductor's forest ``superconductor/superconductor/random_forest.zip`` and the split it was
  fitted on, ``superconductor/split-{train,val}-{x,y}-<i>.npy`` (``split_kwargs["disk_target"]``
  of the registration in ``design_bench/__init__.py``);
* Ant's and D'Kitty's policies ``ant_morphology/ant_oracle.pkl`` and
  ``dkitty_morphology/dkitty_oracle.pkl`` (``design_bench/oracles/exact/*_morphology_oracle.py``).

Each file is fetched with ``huggingface_hub.hf_hub_download`` (progress bar; an interrupted
download resumes where it stopped) and checked against the checksum the hub lists for it (LFS
SHA-256, else the git blob's SHA-1); files already there with the right checksum are kept, so the
command can be run again after an interruption. Nothing is ever downloaded unless this command
runs: lightning_mbo never calls it by itself.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lightning_mbo.tasks.io import DATA_DIR_ENV, HF_MIRROR
from lightning_mbo.tasks.registry import TaskSpec, get_spec
from lightning_mbo.validation import SettingsError

#: The mirror: a Hugging Face dataset in design-bench's data layout.
MIRROR_REPO = "beckhamc/design_bench_data"
#: Files besides the shards, per task: (pattern under the data directory, required).
EXTRA_FILES: dict[str, tuple[tuple[str, bool], ...]] = {
    "Superconductor-RandomForest-v0": (("superconductor/superconductor/random_forest.zip", True),
                                       ("superconductor/split-*-[xy]-*.npy", False)),
    "AntMorphology-Exact-v0": (("ant_morphology/ant_oracle.pkl", True),),
    "DKittyMorphology-Exact-v0": (("dkitty_morphology/dkitty_oracle.pkl", True),),
}


class DownloadError(RuntimeError):
    """The mirror cannot be reached, lacks a file, or sent a file whose checksum is wrong."""


@dataclass(frozen=True)
class RemoteFile:
    """A file on the mirror.

    Attributes:
        path: its path in the repository (= under the data directory).
        size: its size in bytes.
        sha256: the SHA-256 of its content, for files stored with LFS.
        blob_id: its git blob id (SHA-1 of ``"blob <size>\\0" + content``), for files stored in git.
    """

    path: str
    size: int
    sha256: str | None = None
    blob_id: str | None = None


class Hub(Protocol):
    """Where files come from: the Hugging Face mirror, or a stand-in (tests)."""

    name: str

    def list_files(self, folder: str) -> list[RemoteFile]:
        """Every file below ``folder`` of the repository."""
        ...

    def fetch(self, path: str, local_dir: Path) -> Path:
        """Download ``path`` to ``local_dir / path`` (resuming a partial download) and return it."""
        ...


class HuggingFaceHub:
    """The mirror through ``huggingface_hub`` (imported when used).

    Args:
        repo_id: the dataset repository.
        revision: a branch, tag or commit to pin (``None``: the default branch).
        endpoint: another hub endpoint (``None``: ``$HF_ENDPOINT`` or huggingface.co).
    """

    def __init__(self, repo_id: str = MIRROR_REPO, revision: str | None = None, endpoint: str | None = None) -> None:
        try:
            import huggingface_hub  # noqa: PLC0415
        except ImportError as err:
            raise SettingsError("downloading needs huggingface_hub: pip install 'lightning_mbo[continuous]'") from err
        self.hf = huggingface_hub
        self.repo_id, self.revision, self.endpoint = repo_id, revision, endpoint
        self.name = f"https://huggingface.co/datasets/{repo_id}" + (f"@{revision}" if revision else "")

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as err:  # network, HTTP and hub errors alike: one line naming the cause
            raise DownloadError(f"{what} from {self.name} failed ({type(err).__name__}: {err}); check the network "
                                "connection (or set HF_ENDPOINT to a mirror) and run the command again") from err

    def list_files(self, folder: str) -> list[RemoteFile]:
        api = self.hf.HfApi(endpoint=self.endpoint)
        entries = self._call(f"listing {folder}/", lambda: list(api.list_repo_tree(
            self.repo_id, path_in_repo=folder, recursive=True, repo_type="dataset", revision=self.revision)))
        files = []
        for entry in entries:
            if not hasattr(entry, "size"):  # a folder
                continue
            lfs = getattr(entry, "lfs", None)
            sha = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
            files.append(RemoteFile(entry.path, int(entry.size), sha, None if sha else entry.blob_id))
        return files

    def fetch(self, path: str, local_dir: Path) -> Path:
        return Path(self._call(f"downloading {path}", lambda: self.hf.hf_hub_download(
            self.repo_id, path, repo_type="dataset", revision=self.revision, local_dir=local_dir,
            endpoint=self.endpoint)))


def task_files(spec: TaskSpec) -> tuple[tuple[str, bool], ...]:
    """The patterns (under the data directory) of a task's files, each with whether it is required."""
    return ((f"{spec.folder}/{spec.prefix}-[xy]-*.npy", True), *EXTRA_FILES.get(spec.name, ()))


def checksum_ok(path: Path, remote: RemoteFile) -> bool:
    """Whether ``path`` has the size and checksum the mirror lists for ``remote``."""
    if not path.is_file() or path.stat().st_size != remote.size:
        return False
    if remote.sha256:
        digest = hashlib.sha256()
    elif remote.blob_id:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {remote.size}\0".encode())
    else:
        return True  # the mirror lists no checksum: the size is all there is to check
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest() == (remote.sha256 or remote.blob_id)


def plan(spec: TaskSpec, hub: Hub) -> list[RemoteFile]:
    """The mirror's files of ``spec``, checked against what design-bench expects.

    Raises:
        DownloadError: a required file is not on the mirror, or its shard count is not design-bench's.
    """
    listing = hub.list_files(spec.folder)
    chosen: dict[str, RemoteFile] = {}
    for pattern, required in task_files(spec):
        found = [f for f in listing if fnmatch.fnmatchcase(f.path, pattern)]
        if required and not found:
            raise DownloadError(f"{hub.name} has no {pattern} for {spec.name}; it lists {len(listing)} files under "
                                f"{spec.folder}/ (is it design-bench's data? see {HF_MIRROR})")
        chosen.update({f.path: f for f in found})
    shards = [p for p in chosen if fnmatch.fnmatchcase(p, f"{spec.folder}/{spec.prefix}-x-*.npy")]
    if spec.num_shards is not None and len(shards) != spec.num_shards:
        raise DownloadError(f"{hub.name} has {len(shards)} x shards for {spec.name}, design-bench has "
                            f"{spec.num_shards}: the mirror is not design-bench's data")
    return sorted(chosen.values(), key=lambda f: f.path)


def download(task: str, data_dir: str | os.PathLike, hub: Hub | None = None,
             say: Callable[[str], None] = print) -> list[Path]:
    """Fetch a task's files into ``data_dir`` in design-bench's layout; keep those already there.

    Args:
        task: a registered design-bench task name.
        data_dir: the data directory (the task's folder goes under it).
        hub: where files come from (``None``: :class:`HuggingFaceHub` on the mirror).
        say: where progress lines go.

    Returns:
        The task's local files.

    Raises:
        DownloadError: see :func:`plan`; a download failed or arrived with a wrong checksum (the
            bad file is deleted: run the command again).
        SettingsError: a synthetic task (nothing to download).
    """
    spec = get_spec(task)
    if spec.oracle == "closed_form":
        raise SettingsError(f"{task} is synthetic (built in memory): there is nothing to download")
    root = Path(data_dir).expanduser()
    hub = hub or HuggingFaceHub()
    files = plan(spec, hub)
    total = sum(f.size for f in files)
    say(f"{task}: {len(files)} files ({total / 2**20:.1f} MiB) from {hub.name} into {root}")
    out, fetched = [], 0
    for i, remote in enumerate(files, 1):
        local = root / remote.path
        if checksum_ok(local, remote):
            say(f"[{i}/{len(files)}] {remote.path}: already there, checksum ok")
        else:
            say(f"[{i}/{len(files)}] {remote.path} ({remote.size / 2**20:.1f} MiB)")
            local.parent.mkdir(parents=True, exist_ok=True)
            got = hub.fetch(remote.path, root)
            if got.resolve() != local.resolve():
                raise DownloadError(f"{remote.path} arrived at {got}, not at {local}")
            if not checksum_ok(local, remote):
                local.unlink(missing_ok=True)
                raise DownloadError(f"{remote.path} arrived with a wrong size or checksum (deleted); run the command "
                                    "again to download it afresh")
            fetched += 1
        out.append(local)
    say(f"{task}: {len(files)} files in {root / spec.folder} ({fetched} downloaded, {len(files) - fetched} already "
        f"there). Use them with --data.data_dir {root} or export {DATA_DIR_ENV}={root}")
    return out


def default_data_dir(data_dir: str | None) -> Path:
    """``data_dir``, else ``$LIGHTNING_MBO_DATA_DIR``; neither is a :class:`SettingsError`."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV)
    if not chosen:
        raise SettingsError(f"say where the data goes: --data_dir D (or set ${DATA_DIR_ENV}); runs then read it "
                            "with --data.data_dir D")
    return Path(chosen).expanduser()
