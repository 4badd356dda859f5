"""Files in design-bench 2.0.20's formats, written here for the tests (none of the real ones is on
this machine): Superconductor's shards, its ``random_forest.zip`` and split, and old-format pickles.

The forest is fitted as design-bench fits it (``ApproximateOracle.fit``, ``RandomForestOracle.protected_fit``):
a uniform draw of rows of the full dataset, half held out, x and y normalised by the draw's mean and
population std, the zip written as ``ApproximateOracle.save_params`` writes it. Nothing here uses
lightning_mbo's own forest code, so the tests compare against an independent reference.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUPERCONDUCTOR = "Superconductor-RandomForest-v0"
#: design-bench's node fields before scikit-learn 1.3 added ``missing_go_to_left``.
OLD_NODE_DTYPE = np.dtype([("left_child", "<i8"), ("right_child", "<i8"), ("feature", "<i8"), ("threshold", "<f8"),
                           ("impurity", "<f8"), ("n_node_samples", "<i8"), ("weighted_n_node_samples", "<f8")])


@dataclass
class ForestFiles:
    """What :func:`write_superconductor` wrote: the data directory and the reference quantities."""

    root: Path
    x: np.ndarray  # (N, D) float32, the full dataset
    y: np.ndarray  # (N,) float32
    model: object  # the fitted RandomForestRegressor
    fit_rows: np.ndarray  # the draw the forest was fitted on (train and validation)
    val_rows: np.ndarray
    rank_correlation: float

    def reference(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """design-bench's score (``OracleBuilder.predict``) with the statistics of ``rows`` taken in
        dataset order: ``f((x - m) / s) * sy + my`` in float32."""
        rows = np.sort(rows)
        m, s = design_bench_statistics(self.x[rows])
        my, sy = design_bench_statistics(self.y[rows, None])
        pred = self.model.predict((x.astype(np.float32) - m) / s)[:, np.newaxis].astype(np.float32)
        return (pred * sy + my)[:, 0]


def design_bench_statistics(a: np.ndarray, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``DatasetBuilder.update_x_statistics`` as design-bench 2.0.20 writes it (design_bench/datasets/
    dataset_builder.py), line for line, over the rows of ``a`` in batches of ``internal_batch_size = 32``."""
    samples = x_mean = 0
    for i in range(0, len(a), batch):
        x_batch = a[i:i + batch]
        batch_size = np.array(x_batch.shape[0], dtype=np.float32)
        x_mean = x_mean * (samples / (samples + batch_size)) + np.sum(x_batch, axis=0, keepdims=True) / (
            samples + batch_size)
        samples += batch_size
    samples = x_variance = 0
    for i in range(0, len(a), batch):
        x_batch = a[i:i + batch]
        batch_size = np.array(x_batch.shape[0], dtype=np.float32)
        x_variance = x_variance * (samples / (samples + batch_size)) + np.sum(
            np.square(x_batch - x_mean), axis=0, keepdims=True) / (samples + batch_size)
        samples += batch_size
    std = np.sqrt(x_variance)
    return x_mean, np.where(std == 0.0, 1.0, std)


def _old_tree(tree: object) -> object:
    """A stand-in that pickles as the given tree would have before scikit-learn 1.3 (no missing_go_to_left)."""
    cls, args, state = tree.__reduce__()
    old = np.zeros(state["nodes"].shape, OLD_NODE_DTYPE)
    for name in OLD_NODE_DTYPE.names:
        old[name] = state["nodes"][name]

    class OldTree:
        def __reduce__(self):
            return cls, args, {**state, "nodes": old}

    return OldTree()


def old_format_pickle(model: object, version: str = "0.24.2") -> bytes:
    """``model`` pickled as scikit-learn 0.24 wrote it: old module paths (``sklearn.ensemble.forest``,
    ``sklearn.tree.tree``, ``numpy.core``), old node layout, ``n_features_``, ``base_estimator``,
    criterion ``"mse"``, ``max_features="auto"``, no ``monotonic_cst``, protocol 2."""
    from sklearn.base import BaseEstimator  # noqa: PLC0415

    def old_state(est: object) -> dict:
        state = dict(vars(est))
        state["_sklearn_version"] = version
        state.pop("monotonic_cst", None)
        if "n_features_in_" in state:
            state["n_features_"] = state.pop("n_features_in_")
        if state.get("criterion") == "squared_error":
            state["criterion"] = "mse"
        if "tree_" in state:
            state["tree_"] = _old_tree(state["tree_"])
        if "estimator" in state:
            state["base_estimator"] = state.pop("estimator")
            state.pop("estimator_", None)
            state["max_features"] = "auto"
        return state

    class OldPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, BaseEstimator):
                return copyreg._reconstructor, (type(obj), object, None), old_state(obj)
            return NotImplemented

    buf = io.BytesIO()
    OldPickler(buf, protocol=2).dump(model)
    raw = buf.getvalue()
    for new, old in ((b"sklearn.ensemble._forest", b"sklearn.ensemble.forest"), (b"sklearn.tree._classes",
                                                                                  b"sklearn.tree.tree"),
                     (b"numpy._core", b"numpy.core")):
        raw = raw.replace(new, old)
    return raw


def write_zip(path: Path, forest_pickle: bytes, rank_correlation: float, disk_target: str = "superconductor/split",
              members: dict[str, bytes] | None = None) -> Path:
    """A ``random_forest.zip`` as ``ApproximateOracle.save_params`` writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = {
        "random_forest.pkl": forest_pickle,
        "rank_correlation.npy": np.float64(rank_correlation).dumps(),
        "split_kwargs.pkl": pickle.dumps({"val_fraction": 0.5, "subset": None, "shard_size": 5000, "to_disk": True,
                                          "disk_target": disk_target, "is_absolute": False}),
        "model_kwargs.pkl": pickle.dumps({"n_estimators": 10, "max_depth": 8, "max_features": "auto"}),
    } if members is None else members
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def write_superconductor(root: Path, n: int = 3000, dim: int = 8, seed: int = 0, internal: int = 2000,
                         old_pickle: bool = False, forest: bool = True, split: bool = True) -> ForestFiles:
    """Superconductor in design-bench's layout under ``root``: 5 shards, the forest's zip and its split."""
    from scipy.stats import spearmanr  # noqa: PLC0415
    from sklearn.ensemble import RandomForestRegressor  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 1.0, size=(n, dim)).astype(np.float32)
    x[:, -1] = np.round(x[:, -1])  # element counts: many ties, like the real data
    y = (10 * x[:, 0] + 5 * np.sin(x[:, 1]) + x[:, 2] * x[:, 3] + rng.normal(size=n)).astype(np.float32)
    y -= y.min() - np.float32(0.1)
    folder = root / "superconductor"
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(n), 5)):
        np.save(folder / f"superconductor-x-{i}.npy", x[part])
        np.save(folder / f"superconductor-y-{i}.npy", y[part, None])
    draw = np.random.RandomState(seed + 1)  # design-bench's global generator
    rows = np.sort(draw.choice(n, internal, replace=False))
    val = np.zeros(internal, dtype=bool)
    val[draw.choice(internal, internal // 2, replace=False)] = True
    # The internal dataset's statistics, in dataset order; x and y normalised in float32 (dataset_to_oracle_x/_y).
    m, s = design_bench_statistics(x[rows])
    my, sy = design_bench_statistics(y[rows, None])
    train, held = rows[~val], rows[val]
    model = RandomForestRegressor(n_estimators=10, max_depth=8, random_state=seed)
    model.fit((x[train] - m) / s, ((y[train, None] - my) / sy)[:, 0])
    corr = float(spearmanr(model.predict((x[held] - m) / s), ((y[held, None] - my) / sy)[:, 0])[0])
    if split:
        for part, sel in (("train", train), ("val", held)):
            np.save(folder / f"split-{part}-x-0.npy", x[sel])
            np.save(folder / f"split-{part}-y-0.npy", y[sel, None])
    if forest:
        blob = old_format_pickle(model) if old_pickle else pickle.dumps(model)
        write_zip(folder / "superconductor" / "random_forest.zip", blob, corr)
    return ForestFiles(root, x, y, model, rows, held, corr)
