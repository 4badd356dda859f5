"""``python -m lightning_mbo data download``, offline: the Hugging Face client is pointed at a local
stand-in of the mirror (a folder in design-bench's layout), and any network connection fails the test."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")
pytest.importorskip("sklearn")

from huggingface_hub.hf_api import RepoFile, RepoFolder  # noqa: E402

from lightning_mbo.cli import main  # noqa: E402
from lightning_mbo.tasks import QUADRATIC, MissingDataError, Task, UnknownTaskError  # noqa: E402
from lightning_mbo.tasks import io as task_io  # noqa: E402
from lightning_mbo.tasks.commands.download import (  # noqa: E402
    MIRROR_REPO,
    DownloadError,
    HuggingFaceHub,
    RemoteFile,
    checksum_ok,
    default_data_dir,
    download,
)
from lightning_mbo.validation import SettingsError  # noqa: E402
from tests.tasks.design_bench_files import SUPERCONDUCTOR, write_superconductor, write_zip  # noqa: E402

ANT = "AntMorphology-Exact-v0"
SC_FILES = {*(f"superconductor/superconductor-{k}-{i}.npy" for k in "xy" for i in range(5)),
            "superconductor/superconductor/random_forest.zip",
            *(f"superconductor/split-{p}-{k}-0.npy" for p in ("train", "val") for k in "xy")}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalMirror:
    """A folder standing in for the Hugging Face dataset: ``HfApi.list_repo_tree`` and
    ``hf_hub_download`` are replaced by functions that serve it (``.npy`` and ``.zip`` as LFS files,
    the rest as plain git files, as on the hub)."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.fetched, self.tamper = root, [], None
        self.hidden: set[str] = set()
        self.listed_repos: list[tuple[str, str]] = []
        mirror = self

        def list_repo_tree(api, repo_id, path_in_repo=None, *, recursive=False, expand=False, revision=None,
                           repo_type=None, token=None):
            assert recursive and repo_type == "dataset"
            mirror.listed_repos.append((repo_id, path_in_repo))
            base = mirror.root / (path_in_repo or "")
            for path in sorted(base.rglob("*")):
                rel = path.relative_to(mirror.root).as_posix()
                if rel in mirror.hidden:
                    continue
                if path.is_dir():
                    yield RepoFolder(path=rel, oid="0" * 40)
                    continue
                data = path.read_bytes()
                lfs = None
                if path.suffix in (".npy", ".zip"):
                    lfs = {"size": len(data), "oid": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                yield RepoFile(path=rel, size=len(data), oid=_git_blob_id(data), lfs=lfs)

        def hf_hub_download(repo_id, filename, *, repo_type=None, revision=None, local_dir=None, endpoint=None,
                            **kwargs):
            assert repo_type == "dataset" and local_dir is not None
            mirror.fetched.append(filename)
            target = Path(local_dir) / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            data = (mirror.root / filename).read_bytes()
            target.write_bytes(mirror.tamper(filename, data) if mirror.tamper else data)
            return str(target)

        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", list_repo_tree)
        monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    root = tmp_path / "mirror"
    write_superconductor(root, n=600, internal=400)
    # What the real mirror also holds and a Superconductor download must leave alone.
    write_zip(root / "superconductor/superconductor/gaussian_process.zip", b"gp", 0.0)
    np.save(root / "superconductor/superconductor-random_forest-y-0.npy", np.zeros((3, 1), np.float32))
    (root / "ant_morphology").mkdir()
    x = np.random.default_rng(0).uniform(-1, 1, size=(10, 60)).astype(np.float32)
    np.save(root / "ant_morphology/ant_morphology-x-0.npy", x)
    np.save(root / "ant_morphology/ant_morphology-y-0.npy", x.sum(1, keepdims=True))
    (root / "ant_morphology/ant_oracle.pkl").write_bytes(b"a policy, stored in git")
    return LocalMirror(root, monkeypatch)


def test_download_fetches_the_tasks_files_in_design_benchs_layout(mirror, tmp_path, capsys):
    data = tmp_path / "data"
    got = download(SUPERCONDUCTOR, data)
    assert {p.relative_to(data).as_posix() for p in got} == SC_FILES == set(mirror.fetched)
    for rel in SC_FILES:
        assert (data / rel).read_bytes() == (mirror.root / rel).read_bytes()
    assert not (data / "superconductor/superconductor/gaussian_process.zip").exists()
    assert mirror.listed_repos == [(MIRROR_REPO, "superconductor")]
    out = capsys.readouterr().out
    assert "[1/15]" in out and f"--data.data_dir {data}" in out and "15 downloaded, 0 already there" in out
    # The files are design-bench's layout: a run reads them and scores with the forest.
    x = Task(SUPERCONDUCTOR, data_dir=mirror.root).x_all[:5]
    np.testing.assert_array_equal(Task(SUPERCONDUCTOR, data_dir=data).score(x),
                                  Task(SUPERCONDUCTOR, data_dir=mirror.root).score(x))


def test_morphology_download_takes_the_policy_through_the_command_line(mirror, tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setenv(task_io.DATA_DIR_ENV, str(data))  # no --data_dir: $LIGHTNING_MBO_DATA_DIR
    main(["data", "download", ANT])
    assert sorted(mirror.fetched) == ["ant_morphology/ant_morphology-x-0.npy", "ant_morphology/ant_morphology-y-0.npy",
                                      "ant_morphology/ant_oracle.pkl"]
    assert (data / "ant_morphology/ant_oracle.pkl").read_bytes() == b"a policy, stored in git"


def test_a_second_run_resumes(mirror, tmp_path, capsys):
    data = tmp_path / "data"
    download(SUPERCONDUCTOR, data)
    mirror.fetched.clear()
    download(SUPERCONDUCTOR, data)
    assert mirror.fetched == []  # every file there with its checksum: nothing fetched again
    assert "0 downloaded, 15 already there" in capsys.readouterr().out
    shard = data / "superconductor/superconductor-x-3.npy"
    shard.write_bytes(shard.read_bytes()[:100])  # an interrupted download
    zip_path = data / "superconductor/superconductor/random_forest.zip"
    blob = bytearray(zip_path.read_bytes())
    blob[-1] ^= 1  # same size, other bytes: only the checksum tells
    zip_path.write_bytes(bytes(blob))
    download(SUPERCONDUCTOR, data)
    assert sorted(mirror.fetched) == ["superconductor/superconductor-x-3.npy",
                                      "superconductor/superconductor/random_forest.zip"]
    assert zip_path.read_bytes() == (mirror.root / "superconductor/superconductor/random_forest.zip").read_bytes()


def test_a_file_arriving_corrupt_is_deleted(mirror, tmp_path):
    mirror.tamper = lambda name, data: data[:-1] + bytes([data[-1] ^ 1]) if name.endswith("-y-2.npy") else data
    with pytest.raises(DownloadError, match=r"superconductor-y-2.npy arrived with a wrong size or checksum \(deleted"):
        download(SUPERCONDUCTOR, tmp_path / "data")
    assert not (tmp_path / "data/superconductor/superconductor-y-2.npy").exists()


def test_a_mirror_without_the_oracle_or_with_other_shards_is_refused(mirror, tmp_path):
    mirror.hidden = {"ant_morphology/ant_oracle.pkl"}
    with pytest.raises(DownloadError, match="has no ant_morphology/ant_oracle.pkl for AntMorphology-Exact-v0"):
        download(ANT, tmp_path / "data")
    mirror.hidden = {"superconductor/superconductor-x-4.npy"}
    with pytest.raises(DownloadError, match="has 4 x shards for Superconductor-RandomForest-v0, design-bench has 5"):
        download(SUPERCONDUCTOR, tmp_path / "data")
    assert mirror.fetched == []


def test_hub_failures_are_one_clear_error(monkeypatch, tmp_path):
    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_tree", unreachable)
    with pytest.raises(DownloadError, match=r"listing superconductor/ from https://huggingface.co/datasets/"
                                            r"beckhamc/design_bench_data failed \(ConnectionError"):
        download(SUPERCONDUCTOR, tmp_path)
    hub = HuggingFaceHub(revision="abc123")
    assert hub.name.endswith("design_bench_data@abc123")


def test_nothing_is_downloaded_without_the_command(mirror, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MissingDataError, match=f"python -m lightning_mbo data download {SUPERCONDUCTOR} --data_dir"):
        Task(SUPERCONDUCTOR, data_dir=empty)
    shards_only = tmp_path / "shards"
    shutil.copytree(mirror.root / "superconductor", shards_only / "superconductor",
                    ignore=shutil.ignore_patterns("*.zip"))
    task = Task(SUPERCONDUCTOR, data_dir=shards_only)
    with pytest.raises(MissingDataError, match="random_forest.zip, which is missing. Download it"):
        task.score(task.x[:1])
    assert mirror.fetched == [] and mirror.listed_repos == []


def test_bad_requests(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv(task_io.DATA_DIR_ENV, raising=False)
    with pytest.raises(SettingsError, match="--data_dir"):
        default_data_dir(None)
    assert default_data_dir(str(tmp_path)) == tmp_path
    with pytest.raises(SettingsError, match="--data_dir"):
        main(["data", "download", SUPERCONDUCTOR])
    with pytest.raises(SettingsError, match="synthetic"):
        download(QUADRATIC, tmp_path)
    with pytest.raises(UnknownTaskError, match="unknown task 'Superconductor-v0'"):
        download("Superconductor-v0", tmp_path)
    assert mirror.fetched == []


def test_checksums(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"hello\n")
    # `git hash-object` of "hello\n" and its SHA-256, as the hub lists them.
    assert checksum_ok(path, RemoteFile("f", 6, blob_id="ce013625030ba8dba906f756967f9e9ca394464a"))
    assert checksum_ok(path, RemoteFile("f", 6, sha256=hashlib.sha256(b"hello\n").hexdigest()))
    assert not checksum_ok(path, RemoteFile("f", 6, blob_id="0" * 40))
    assert not checksum_ok(path, RemoteFile("f", 7, blob_id="ce013625030ba8dba906f756967f9e9ca394464a"))
    assert not checksum_ok(tmp_path / "absent", RemoteFile("absent", 0))
