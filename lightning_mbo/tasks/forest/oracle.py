"""Superconductor-RandomForest-v0's oracle: design-bench's saved random forest, scored natively.

design-bench 2.0.20 scores a design ``x`` ``(D,)`` (a material's chemical formula, as amounts of each element) as

    y(x) = f((x - μ_x) / σ_x) · σ_y + μ_y,

``f`` the ``RandomForestRegressor`` in ``<data>/superconductor/superconductor/random_forest.zip``
(``random_forest.pkl``; the zip is ``"{dataset.name}/{oracle.name}.zip"``,
``design_bench/oracles/approximate_oracle.py``, ``get_disk_resource``) and ``μ``, ``σ`` the mean and
population standard deviation (0 -> 1) of x and y over the oracle's "internal dataset"
(``design_bench/oracles/oracle_builder.py``, ``OracleBuilder.__init__`` and ``dataset_to_oracle_x``,
``oracle_to_dataset_y``; ``design_bench/datasets/dataset_builder.py``, ``update_x_statistics``): a
uniform draw of ``max_samples = 2000`` rows of the FULL dataset (the registration's
``oracle_kwargs``: ``max_samples=2000, max_percentile=100``), made by ``DatasetBuilder.subsample``
with numpy's global generator.

The forest was fitted (``ApproximateOracle.fit``, ``RandomForestOracle.protected_fit``) on half of
such a draw (``split_kwargs``: ``val_fraction=0.5``; the halves saved as
``superconductor/split-train-{x,y}-*.npy`` and ``split-val-*``), both halves normalised by that
draw's statistics. But every ``design_bench.make`` draws the internal rows AGAIN and scores with
the new draw's statistics, not the fit's. So there are two normalisations:

* ``"released"`` (the default: design-bench as it ran): the statistics of a fresh uniform draw of
  2000 rows of the full dataset, here from a seeded generator (design-bench's draw was unseeded,
  so its oracle differed slightly from one run to the next);
* ``"split"``: the statistics of the saved split's 2000 rows, the normalisation the forest was
  fitted under (deterministic; design-bench scored designs this way only while fitting).

:func:`refit_forest` (``python -m lightning_mbo data refit``, opt-in) fits a new forest the way
design-bench fitted its own, for users without the saved zip; its scores are NOT comparable with
published numbers and are labelled non-canonical. No Lightning, no torch.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lightning_mbo.tasks.forest.sklearn_pickle import LoadedForest, load_forest, restricted_loads
from lightning_mbo.tasks.io import BadDataError, MissingDataError, download_command, find_shards, read_shards
from lightning_mbo.tasks.registry import get_spec

__all__ = ["ForestFile", "ForestNormalization", "ForestOracle", "Normalization", "forest_oracle", "read_forest_zip",
           "refit_forest", "released_normalization", "spearman", "split_normalization", "split_validation",
           "write_forest_zip"]

Normalization = Literal["released", "split"]

#: The oracle's internal draw (``oracle_kwargs["max_samples"]``) and the share of it held out.
INTERNAL_ROWS, VAL_FRACTION = 2000, 0.5
#: The forest's settings (``oracle_kwargs["model_kwargs"]``); ``max_features="auto"`` meant every feature.
MODEL_KWARGS: dict[str, Any] = {"n_estimators": 100, "max_depth": 100, "max_features": 1.0}
#: Where a local refit goes, inside the task folder (never where design-bench's own files are).
REFIT_FOLDER = "refit"
_DEFAULT_SPLIT = "superconductor/split"  # split_kwargs["disk_target"], relative to the data directory


#: Rows per batch of design-bench's running statistics (``DatasetBuilder``'s ``internal_batch_size``).
STATS_BATCH = 32


def running_moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the rows of ``a`` ``(n, ...)`` exactly as design-bench computes them.

    ``DatasetBuilder.update_x_statistics`` / ``update_y_statistics``: float32 running means over
    consecutive batches of 32 rows, ``m <- m · s / (s + b) + Σ_batch a / (s + b)`` (``s`` rows so
    far, ``b`` in the batch; the ratio in float64 and applied in float32, as numpy 1.x evaluated
    that line), the variance the same way around the final mean, ``σ = sqrt(variance)`` with 0 -> 1.
    Bit for bit design-bench's numbers when the rows come in its order (the dataset's), so a forest
    sees inputs identical to those it was fitted on.

    Returns:
        ``(1, ...)`` float32 mean and std.
    """
    a = np.asarray(a, dtype=np.float32)

    def run(term):
        seen, acc = 0.0, np.zeros((1, *a.shape[1:]), dtype=np.float32)
        for start in range(0, len(a), STATS_BATCH):
            batch = a[start:start + STATS_BATCH]
            n = float(len(batch))
            total = np.sum(term(batch), axis=0, keepdims=True)
            acc = acc * np.float32(seen / (seen + n)) + total / np.float32(seen + n)
            seen += n
        return acc

    mean = run(lambda batch: batch)
    std = np.sqrt(run(lambda batch: np.square(batch - mean)))
    return mean, np.where(std == 0, np.float32(1), std)


@dataclass(frozen=True)
class ForestNormalization:
    """The statistics the forest's inputs and outputs are normalised with.

    Attributes:
        x_mean: ``(D,)`` and x_std ``(D,)``: of the designs.
        y_mean: and y_std: of the scores.
        how: ``"released"`` or ``"split"`` (see the module docstring).
        rows: rows the statistics are over.
        seed: the seed of the ``released`` draw (``None`` for ``split``).
    """

    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.float32
    y_std: np.float32
    how: Normalization
    rows: int
    seed: int | None = None

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray, how: Normalization, seed: int | None = None) -> ForestNormalization:
        """The statistics of rows ``x`` ``(n, D)`` and ``y`` ``(n,)``, taken in the order given."""
        x_mean, x_std = running_moments(x.reshape(len(x), -1))
        y_mean, y_std = running_moments(np.asarray(y).reshape(-1, 1))
        return cls(x_mean[0], x_std[0], y_mean[0, 0], y_std[0, 0], how, len(x), seed)


def released_normalization(x_all: np.ndarray, y_all: np.ndarray, seed: int) -> ForestNormalization:
    """design-bench's scoring-time statistics: a uniform draw of 2000 rows of the full dataset
    (``DatasetBuilder.subsample``, without replacement; here from ``numpy.random.default_rng(seed)``),
    taken in dataset order as design-bench iterates them."""
    rows = np.sort(np.random.default_rng(seed).choice(len(y_all), size=min(INTERNAL_ROWS, len(y_all)),
                                                      replace=False))
    return ForestNormalization.of(x_all[rows], y_all[rows], "released", seed)


def dataset_order(x: np.ndarray, y: np.ndarray, x_all: np.ndarray, y_all: np.ndarray) -> np.ndarray:
    """The order of rows ``x``, ``y`` in the full dataset (rows not found there last, as given).

    The split's train and validation halves are each saved in dataset order; design-bench computed
    the fit's statistics over both interleaved in that order. Equal rows are interchangeable.
    """
    index: dict[bytes, int] = {}
    full = np.ascontiguousarray(x_all.reshape(len(x_all), -1))
    for i in range(len(full) - 1, -1, -1):
        index[full[i].tobytes() + np.float32(y_all[i]).tobytes()] = i
    rows = np.ascontiguousarray(x.reshape(len(x), -1))
    where = np.array([index.get(r.tobytes() + np.float32(v).tobytes(), len(full) + k)
                      for k, (r, v) in enumerate(zip(rows, np.asarray(y).reshape(-1), strict=True))])
    return np.argsort(where, kind="stable")


@dataclass(frozen=True)
class ForestFile:
    """A ``random_forest.zip`` as design-bench writes it (``ApproximateOracle.save_params``).

    Attributes:
        path: the zip.
        sha256: hex digest of its bytes.
        forest: the unpickled forest (:class:`~lightning_mbo.tasks.forest.sklearn_pickle.LoadedForest`).
        rank_correlation: the Spearman correlation design-bench measured on the split's validation half.
        split_kwargs: how design-bench split the fitting rows (``disk_target``: where the split is).
        model_kwargs: the forest's settings.
    """

    path: Path
    sha256: str
    forest: LoadedForest
    rank_correlation: float | None
    split_kwargs: dict[str, Any]
    model_kwargs: dict[str, Any]

    def split_paths(self, root: Path, part: str) -> tuple[list[Path], list[Path]]:
        """The split's ``part`` (``train`` or ``val``) shards under the data directory ``root``."""
        target = root / f"{self.split_kwargs.get('disk_target') or _DEFAULT_SPLIT}-{part}"
        return find_shards(target.parent, target.name)


def read_forest_zip(path: Path) -> ForestFile:
    """Read a ``random_forest.zip``: ``random_forest.pkl`` (required), ``rank_correlation.npy``,
    ``split_kwargs.pkl`` and ``model_kwargs.pkl``.

    Raises:
        BadDataError: not a zip, no ``random_forest.pkl`` in it, or a pickle that is not design-bench's.
    """
    blob = Path(path).read_bytes()
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise BadDataError(f"{path} is not a zip archive ({err}); delete it and download it again") from err
    with archive:
        names = set(archive.namelist())
        if "random_forest.pkl" not in names:
            raise BadDataError(f"{path} holds {sorted(names)} but no random_forest.pkl: it is not design-bench's "
                               "random-forest oracle")
        forest = load_forest(archive.read("random_forest.pkl"), f"{path}:random_forest.pkl")
        extra = {name: restricted_loads(archive.read(name), f"{path}:{name}") for name in
                 ("rank_correlation.npy", "split_kwargs.pkl", "model_kwargs.pkl") if name in names}
    corr = extra.get("rank_correlation.npy")
    return ForestFile(Path(path), hashlib.sha256(blob).hexdigest(), forest,
                      None if corr is None else float(np.asarray(corr)),
                      dict(extra.get("split_kwargs.pkl") or {}), dict(extra.get("model_kwargs.pkl") or {}))


def split_normalization(file: ForestFile, root: Path, x_all: np.ndarray, y_all: np.ndarray) -> ForestNormalization:
    """The fit's statistics: over the saved split's train and validation rows together, in the
    full dataset's order (:func:`dataset_order`), as design-bench computed them before fitting.

    Raises:
        MissingDataError: the split is not under ``root``.
    """
    xs, ys = [], []
    for part in ("train", "val"):
        x_paths, y_paths = file.split_paths(root, part)
        if not x_paths or len(x_paths) != len(y_paths):
            target = root / f"{file.split_kwargs.get('disk_target') or _DEFAULT_SPLIT}-{part}"
            raise MissingDataError(f"normalization 'split' needs the split the forest was fitted on, "
                                   f"{target}-{{x,y}}-<i>.npy, which is missing: download it with "
                                   f"{download_command(get_spec('Superconductor-RandomForest-v0'), root)}, or use "
                                   "the released normalization")
        x, y = read_shards(x_paths, y_paths)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = dataset_order(x, y, x_all, y_all)
    return ForestNormalization.of(x[order], y[order], "split")


class ForestOracle:
    """``y(x) = f((x - μ_x) / σ_x) · σ_y + μ_y`` in float32, as design-bench computes it.

    Args:
        model: the scikit-learn forest ``f`` (normalised designs -> normalised scores).
        norm: the statistics ``μ``, ``σ``.
    """

    def __init__(self, model: Any, norm: ForestNormalization) -> None:
        self.model, self.norm = model, norm
        self.dim = int(norm.x_mean.size)
        fitted = getattr(model, "n_features_in_", self.dim)
        if fitted != self.dim:
            raise BadDataError(f"the forest takes {fitted} features but the designs have {self.dim}: the forest "
                               "and the dataset are not the same task's")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Raw scores ``(n,)`` float32 of raw designs ``(n, D)``."""
        x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"the forest scores designs of {self.dim} features, got {x.shape[1]}")
        if not np.isfinite(x).all():
            rows = np.flatnonzero(~np.isfinite(x).all(1))
            raise ValueError(f"{len(rows)} designs hold NaN or inf (first rows: {rows[:5].tolist()}); the forest "
                             "scores finite designs only")
        z = (x - self.norm.x_mean) / self.norm.x_std
        pred = self.model.predict(z).astype(np.float32)
        return pred * self.norm.y_std + self.norm.y_mean


def forest_oracle(name: str, folder: Path, oracle_file: str, x_all: np.ndarray, y_all: np.ndarray,
                  normalization: Normalization = "released", seed: int = 0) -> tuple[ForestOracle, dict[str, Any]]:
    """The task's forest oracle and its provenance for ``results.json``.

    design-bench's own zip (``<folder>/<oracle_file>``) is used when it is there; otherwise a local
    refit (``<folder>/refit/``, :func:`refit_forest`) if the user made one, labelled non-canonical.

    Args:
        name: the task's name (for messages).
        folder: the task's folder (``<data>/superconductor``).
        oracle_file: the zip, relative to ``folder``.
        x_all: ``(N, D)`` the full dataset's designs (for the ``released`` draw).
        y_all: ``(N,)`` their scores.
        normalization: ``released`` or ``split`` (see the module docstring).
        seed: the seed of the ``released`` draw.

    Raises:
        MissingDataError: neither the zip nor a refit exists (naming the command that downloads it).
    """
    folder = Path(folder)
    root = folder.parent
    canonical = folder / oracle_file
    refit = folder / REFIT_FOLDER / Path(oracle_file).name
    path = canonical if canonical.is_file() else refit if refit.is_file() else None
    if path is None:
        raise MissingDataError(
            f"{name} is scored by design-bench's saved random forest, {canonical}, which is missing. Download it "
            f"(with the split it was fitted on) with: {download_command(get_spec(name), root)}. Without the mirror, "
            f"python -m lightning_mbo data refit {name} --data_dir {root} fits a NON-CANONICAL stand-in.")
    file = read_forest_zip(path)
    norm = (released_normalization(x_all, y_all, seed) if normalization == "released"
            else split_normalization(file, root, x_all, y_all))
    import sklearn  # noqa: PLC0415

    is_refit = path == refit
    info = {
        "kind": "random_forest_refit" if is_refit else "random_forest",
        "description": ("NON-CANONICAL: a local refit of design-bench's random forest (python -m lightning_mbo data "
                        "refit); its scores are not comparable with published ones" if is_refit else
                        "design-bench's saved random forest, unpickled and scored with scikit-learn"),
        "canonical": not is_refit, "ported": False, "file": str(path), "sha256": file.sha256,
        "sklearn": sklearn.__version__, "pickled_with_sklearn": file.forest.pickled_with,
        "compat_shims": list(file.forest.shims), "normalization": norm.how, "normalization_rows": norm.rows,
        "normalization_seed": norm.seed,
    }
    return ForestOracle(file.forest.model, norm), info


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties), as ``scipy.stats.spearmanr``."""
    def ranks(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return sums[inverse] / counts[inverse]
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def split_validation(file: ForestFile, root: Path, x_all: np.ndarray, y_all: np.ndarray) -> dict[str, Any] | None:
    """Re-score the split's validation half as design-bench did when it fitted the forest, and
    compare the Spearman correlation with the one saved in the zip; ``None`` without the split.

    Args:
        file: the forest's zip.
        root: the data directory the split is under.
        x_all: ``(N, D)`` and y_all ``(N,)``: the full dataset (for the rows' order).
    """
    x_paths, y_paths = file.split_paths(root, "val")
    if not x_paths:
        return None
    try:
        norm = split_normalization(file, root, x_all, y_all)
    except MissingDataError:
        return None
    x, y = read_shards(x_paths, y_paths)
    pred = ForestOracle(file.forest.model, norm)(x)
    ours = spearman(pred, y)
    saved = file.rank_correlation
    return {"rows": len(y), "spearman": ours, "saved_spearman": saved,
            "difference": None if saved is None else abs(ours - saved)}


def write_forest_zip(path: Path, model: Any, rank_correlation: float, split_kwargs: dict[str, Any],
                     model_kwargs: dict[str, Any]) -> None:
    """Write a zip in design-bench's layout (``ApproximateOracle.save_params``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, mode="w") as archive:
        archive.writestr("random_forest.pkl", pickle.dumps(model))
        archive.writestr("rank_correlation.npy", pickle.dumps(np.float64(rank_correlation)))
        archive.writestr("split_kwargs.pkl", pickle.dumps(split_kwargs))
        archive.writestr("model_kwargs.pkl", pickle.dumps(model_kwargs))
    tmp.replace(path)


def refit_forest(folder: Path, oracle_file: str, x_all: np.ndarray, y_all: np.ndarray, seed: int = 0) -> Path:
    """Fit a stand-in forest as design-bench fitted its own, into ``<folder>/refit/`` (NON-CANONICAL).

    2000 rows drawn uniformly from the full dataset, half held out; x and y normalised by the 2000
    rows' statistics; ``RandomForestRegressor(n_estimators=100, max_depth=100, max_features=1.0)``
    fitted on the rest (``random_state=seed``: design-bench's was unseeded); the held-out Spearman
    correlation, the split and the settings saved as design-bench saves them.

    Returns:
        The zip written.
    """
    from sklearn.ensemble import RandomForestRegressor  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(y_all), size=min(INTERNAL_ROWS, len(y_all)), replace=False))
    val_mask = np.zeros(len(rows), dtype=bool)
    val_mask[rng.choice(len(rows), size=int(VAL_FRACTION * len(rows)), replace=False)] = True
    norm = ForestNormalization.of(x_all[rows], y_all[rows], "split")
    out = Path(folder) / REFIT_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    target = f"{Path(folder).name}/{REFIT_FOLDER}/split"
    for part, sel in (("train", rows[~val_mask]), ("val", rows[val_mask])):
        np.save(out / f"split-{part}-x-0.npy", x_all[sel].astype(np.float32))
        np.save(out / f"split-{part}-y-0.npy", y_all[sel].astype(np.float32).reshape(-1, 1))
    model = RandomForestRegressor(**MODEL_KWARGS, random_state=seed)
    train = rows[~val_mask]
    model.fit((x_all[train].reshape(len(train), -1) - norm.x_mean) / norm.x_std,
              (y_all[train] - norm.y_mean) / norm.y_std)
    val = rows[val_mask]
    corr = spearman(model.predict((x_all[val].reshape(len(val), -1) - norm.x_mean) / norm.x_std), y_all[val])
    path = out / Path(oracle_file).name
    split_kwargs = {"val_fraction": VAL_FRACTION, "subset": None, "shard_size": 5000, "to_disk": True,
                    "disk_target": target, "is_absolute": False}
    write_forest_zip(path, model, corr, split_kwargs, {**MODEL_KWARGS, "random_state": seed})
    return path
