"""Unpickling design-bench's saved scikit-learn random forest in a current scikit-learn.

design-bench 2.0.20 saves the Superconductor oracle as ``random_forest.pkl`` inside
``random_forest.zip`` with a plain ``pickle.dump(model, file)``
(``design_bench/oracles/sklearn/random_forest_oracle.py``, ``save_model_to_zip``), written by the
scikit-learn of its day (0.2x). A current scikit-learn refuses such a pickle, so :func:`load_forest`
applies these shims, each only where the pickle needs it, and reports which:

1. module paths that moved: ``sklearn.ensemble.forest`` -> ``sklearn.ensemble._forest`` and
   ``sklearn.tree.tree`` -> ``sklearn.tree._classes`` (scikit-learn 0.22), ``numpy.core`` ->
   ``numpy._core`` (numpy 2);
2. the tree node layout: scikit-learn 1.3 added a ``missing_go_to_left`` field to each node; an
   older tree's nodes are copied field by field into the current layout (the new field 0: a
   design here is never NaN, so it is never read);
3. renamed settings and attributes: ``n_features_`` -> ``n_features_in_`` (1.0),
   ``base_estimator`` / ``base_estimator_`` -> ``estimator`` / ``estimator_`` (1.2), criterion
   ``"mse"`` -> ``"squared_error"`` and ``"mae"`` -> ``"absolute_error"`` (1.0), ``max_features``
   ``"auto"`` -> ``1.0`` (a regressor's ``"auto"`` meant every feature; removed in 1.3); settings a
   later version added (e.g. ``monotonic_cst``, 1.4) get their defaults.

None of them touches what a prediction reads: every split (feature, threshold) and leaf value is
used as saved. Only what a forest is made of may be unpickled (scikit-learn's forest and tree
classes, numpy arrays and scalars, plain containers): anything else is refused before it is built,
so a file that is not design-bench's forest cannot run code. No Lightning, no torch.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import inspect
import io
import pickle
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from lightning_mbo.tasks.io import BadDataError

#: Modules that moved since design-bench's scikit-learn: old path -> current path.
MOVED_MODULES = {"sklearn.ensemble.forest": "sklearn.ensemble._forest", "sklearn.tree.tree": "sklearn.tree._classes"}
#: Modules whose classes (and only classes) a forest's pickle may name.
CLASS_MODULES = frozenset({"sklearn.ensemble._forest", "sklearn.tree._classes", "sklearn.tree._tree"})
#: Functions and types a pickle of numpy arrays and plain containers needs (``numpy.core`` read as ``numpy._core``).
CALLABLES = frozenset({
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.random._pickle", "__randomstate_ctor"), ("numpy.random._pickle", "__bit_generator_ctor"),
    ("numpy.random", "__RandomState_ctor"), ("numpy.random.mtrand", "RandomState"),
    ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"), ("collections", "OrderedDict"),
})
_CRITERIA = {"mse": "squared_error", "mae": "absolute_error"}


@dataclass(frozen=True)
class LoadedForest:
    """A forest unpickled by :func:`load_forest`.

    Attributes:
        model: the scikit-learn forest regressor.
        pickled_with: the scikit-learn version the forest's pickle records (``"pre-0.18"`` for one
            older than the version field).
        shims: what had to be adapted, one line each (empty for a pickle of this scikit-learn).
    """

    model: Any
    pickled_with: str
    shims: tuple[str, ...]


class _PendingTree:
    """Stands in for ``sklearn.tree._tree.Tree`` while unpickling: keeps its arguments and state so
    :func:`_build_tree` can adapt the node layout before the real tree sees it."""

    def __init__(self, *args: Any) -> None:
        self.args: tuple[Any, ...] = args
        self.state: dict[str, Any] | None = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.state = state


class _ForestUnpickler(pickle.Unpickler):
    """An unpickler that builds only forests, trees, numpy arrays and plain containers."""

    def __init__(self, file: io.BytesIO, where: str) -> None:
        super().__init__(file)
        self.where = where
        self.moved: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (copy_reg, __builtin__) that protocol 0-2 pickles use, as pickle maps them.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module in MOVED_MODULES:
            self.moved.add(f"module {module} -> {MOVED_MODULES[module]}")
            module = MOVED_MODULES[module]
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core"):]
        if module == "sklearn.tree._tree" and name == "Tree":
            return _PendingTree
        if module in CLASS_MODULES:
            found = getattr(importlib.import_module(module), name, None)
            if isinstance(found, type):
                return found
        elif (module, name) in CALLABLES:
            return getattr(_import_numpy_module(module), name)
        raise BadDataError(f"{self.where} is not design-bench's random forest: its pickle needs {module}.{name}, "
                           "which no scikit-learn forest is made of (and which is not loaded, as it could run code)")


def _import_numpy_module(module: str) -> Any:
    """``numpy._core.*`` under numpy 2, ``numpy.core.*`` under numpy 1."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        return importlib.import_module(module.replace("numpy._core", "numpy.core", 1))


def _build_tree(pending: _PendingTree, shims: set[str], where: str) -> Any:
    """A real ``Tree`` from a pending one, its nodes copied into the current node layout."""
    from sklearn.tree._tree import NODE_DTYPE, Tree  # noqa: PLC0415

    state: dict[str, Any] = dict(pending.state or {})
    nodes = np.asarray(state.get("nodes"))
    if nodes.dtype.names is None:
        raise BadDataError(f"{where}: a tree's nodes are not scikit-learn's node records ({nodes.dtype})")
    if nodes.dtype != NODE_DTYPE:
        absent = [n for n in NODE_DTYPE.names if n not in nodes.dtype.names]
        if [n for n in absent if n != "missing_go_to_left"]:
            raise BadDataError(f"{where}: a tree's nodes lack {absent}; this is not a scikit-learn tree")
        converted = np.zeros(nodes.shape, dtype=NODE_DTYPE)
        for field in NODE_DTYPE.names:
            if field in nodes.dtype.names:
                converted[field] = nodes[field]
        state["nodes"] = converted
        shims.add("tree nodes copied into the current node layout (" + ", ".join(absent or ["field types"])
                  + " added)")
    tree = Tree(*pending.args)
    tree.__setstate__(state)
    return tree


def _adapt(est: Any, shims: set[str], where: str, seen: set[int]) -> None:
    """Bring one unpickled estimator (and those it holds) up to the current attribute names."""
    from sklearn.base import BaseEstimator  # noqa: PLC0415

    if id(est) in seen:
        return
    seen.add(id(est))
    attrs = vars(est)
    for key, value in list(attrs.items()):
        if isinstance(value, _PendingTree):
            attrs[key] = _build_tree(value, shims, where)
        elif isinstance(value, BaseEstimator):
            _adapt(value, shims, where, seen)
        elif isinstance(value, list) and value and all(isinstance(v, BaseEstimator) for v in value):
            for v in value:
                _adapt(v, shims, where, seen)
    name = type(est).__name__
    for old, new in (("n_features_", "n_features_in_"), ("base_estimator", "estimator"),
                     ("base_estimator_", "estimator_")):
        if old in attrs and new not in attrs:
            value = attrs.pop(old)
            if isinstance(value, str):  # "deprecated", the placeholder of 1.2-1.3
                continue
            attrs[new] = value
            shims.add(f"{name}.{old} -> {new}")
    if attrs.get("criterion") in _CRITERIA:
        shims.add(f"{name}.criterion {attrs['criterion']!r} -> {_CRITERIA[attrs['criterion']]!r}")
        attrs["criterion"] = _CRITERIA[attrs["criterion"]]
    if attrs.get("max_features") == "auto" and "Regressor" in name:
        attrs["max_features"] = 1.0
        shims.add(f"{name}.max_features 'auto' -> 1.0")
    if "estimator" not in attrs and isinstance(attrs.get("estimators_"), list) and attrs["estimators_"]:
        attrs["estimator"] = type(attrs["estimators_"][0])()
        shims.add(f"{name}.estimator set to an unfitted {type(attrs['estimators_'][0]).__name__}")
    added = []
    for param in inspect.signature(type(est).__init__).parameters.values():
        if param.name != "self" and param.default is not inspect.Parameter.empty and param.name not in attrs:
            attrs[param.name] = param.default
            added.append(param.name)
    if added:
        shims.add(f"{name}: settings added since, at their defaults: {', '.join(sorted(added))}")


def restricted_loads(data: bytes, where: str) -> Any:
    """Unpickle ``data`` allowing only forests, trees, numpy arrays and plain containers.

    Returns the object as unpickled (no attribute shims; trees still pending): for the small
    pickles beside the forest in its zip (``split_kwargs.pkl``, ``rank_correlation.npy``).
    """
    try:
        return _ForestUnpickler(io.BytesIO(data), where).load()
    except BadDataError:
        raise
    except Exception as err:  # truncated or foreign pickles fail in many ways
        raise BadDataError(f"{where} is not a readable pickle ({type(err).__name__}: {err}); download it again "
                           "from design-bench's data mirror") from err


def load_forest(data: bytes, where: str) -> LoadedForest:
    """Unpickle design-bench's ``random_forest.pkl`` (its bytes) into a current scikit-learn forest.

    Args:
        data: the pickle's bytes.
        where: what to call the file in messages (its path).

    Raises:
        BadDataError: the pickle is unreadable, names anything a forest is not made of, or holds
            something other than a single-output scikit-learn forest regressor.
    """
    from sklearn.ensemble._forest import ForestRegressor  # noqa: PLC0415

    try:
        from sklearn.exceptions import InconsistentVersionWarning  # noqa: PLC0415
    except ImportError:  # scikit-learn < 1.3
        InconsistentVersionWarning = UserWarning  # noqa: N806
    unpickler = _ForestUnpickler(io.BytesIO(data), where)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        try:
            model = unpickler.load()
        except BadDataError:
            raise
        except Exception as err:
            raise BadDataError(f"{where} is not a readable pickle ({type(err).__name__}: {err}); download it "
                               "again from design-bench's data mirror") from err
    if not isinstance(model, ForestRegressor):
        raise BadDataError(f"{where} holds a {type(model).__module__}.{type(model).__name__}, not a scikit-learn "
                           "random forest regressor: this is not design-bench's random_forest.pkl")
    shims = set(unpickler.moved)
    _adapt(model, shims, where, set())
    if getattr(model, "n_outputs_", 1) != 1:
        raise BadDataError(f"{where} holds a forest with {model.n_outputs_} outputs; design-bench's has one")
    try:  # one prediction now, so an incompatibility shows here and not in the middle of a run
        model.predict(np.zeros((1, int(getattr(model, "n_features_in_", 1))), dtype=np.float32))
    except Exception as err:
        raise BadDataError(f"{where}: the unpickled forest does not predict in scikit-learn "
                           f"{_sklearn_version()} ({type(err).__name__}: {err})") from err
    # scikit-learn warns when a pickle's version differs from its own; no warning: pickled by this version.
    versions = [getattr(w.message, "original_sklearn_version", None) for w in caught
                if isinstance(w.message, InconsistentVersionWarning)
                and getattr(w.message, "estimator_name", None) == type(model).__name__]
    pickled_with = str(versions[0]) if versions and versions[0] else _sklearn_version()
    return LoadedForest(model, pickled_with, tuple(sorted(shims)))


def _sklearn_version() -> str:
    import sklearn  # noqa: PLC0415

    return sklearn.__version__
