"""The trained policy that design-bench's morphology oracles walk each design with: file format and forward pass.

design-bench 2.0.20 downloads ``ant_morphology/ant_oracle.pkl`` and
``dkitty_morphology/dkitty_oracle.pkl`` (today from the Hugging Face mirror
``beckhamc/design_bench_data``) and reads each with ``pickle.load``
(``design_bench/oracles/exact/{ant,dkitty}_morphology_oracle.py``, ``__init__``). The pickle holds
a dict of numpy arrays, the state of a Gaussian policy's MLP: ``base_network.network.{0,2,4}.weight``
``(out, in)`` and ``.bias`` ``(out,)``. The oracle's ``mlp_policy`` runs it deterministically:

    h1 = relu(W0 o + b0),  h2 = relu(W2 h1 + b2),  a = tanh(first half of (W4 h2 + b4))

(the second half is the log standard deviation, unused). Other keys in the dict are ignored.

:func:`load_policy` unpickles only what such a file can hold (dicts, numpy arrays and their
dtypes, as numpy 1's ``numpy.core`` or numpy 2's ``numpy._core`` pickles them under any protocol),
so a file of another kind is refused before anything in it runs.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_mbo.tasks.io import HF_MIRROR, BadDataError, MissingDataError

#: The six arrays the policy file must hold, in forward order.
POLICY_KEYS = tuple(f"base_network.network.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias"))
_ALLOWED = {
    ("collections", "OrderedDict"), ("builtins", "dict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # how protocols 0-2 write an array's bytes
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that builds dicts and numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle's signature)
        canonical = module.replace("numpy.core", "numpy._core", 1) if module.startswith("numpy.core") else module
        if (canonical, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it holds a {module}.{name}, which a policy file of numpy arrays does not")
        if canonical == "collections":
            return collections.OrderedDict
        if canonical == "builtins":
            return dict
        if canonical == "_codecs":
            return codecs.encode
        return getattr(importlib.import_module(canonical), name)


@dataclass(frozen=True)
class MlpPolicy:
    """The oracle's policy: ``(O,)`` observation -> ``(A,)`` action in ``(-1, 1)``.

    Attributes:
        layers: ``((W0, b0), (W2, b2), (W4, b4))``, float64, ``W`` of shape ``(out, in)``; ``W4`` and
            ``b4`` have ``2 A`` rows (mean, then log standard deviation).
    """

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]

    @property
    def observation_size(self) -> int:
        return self.layers[0][0].shape[1]

    @property
    def action_size(self) -> int:
        return self.layers[-1][0].shape[0] // 2

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """``tanh`` of the mean head after two ReLU layers (design-bench ``mlp_policy``).

        The weights are held in float64: the released code multiplies the file's arrays by a
        float64 observation, which numpy does in float64 too.
        """
        (w0, b0), (w2, b2), (w4, b4) = self.layers
        h = np.maximum(0.0, w0 @ obs + b0)
        h = np.maximum(0.0, w2 @ h + b2)
        return np.tanh(np.split(w4 @ h + b4, 2)[0])


def _format_hint(task_file: str) -> str:
    return (f"expected design-bench's `{task_file}` (download it from {HF_MIRROR}): a pickled dict of numpy "
            f"arrays with keys {', '.join(POLICY_KEYS)}")


def policy_from_arrays(arrays: object, task_file: str, observation_size: int, action_size: int) -> MlpPolicy:
    """Check a loaded policy dict and build the :class:`MlpPolicy`; any mismatch is a :class:`BadDataError`.

    Args:
        arrays: what the file unpickled to.
        task_file: the file's name on the mirror, for messages (``ant_morphology/ant_oracle.pkl``).
        observation_size: the robot's observation length (179 Ant, 108 D'Kitty).
        action_size: its action length (12).
    """
    hint = _format_hint(task_file)
    if not isinstance(arrays, dict):
        raise BadDataError(f"the policy file holds a {type(arrays).__name__}, not a dict of arrays; {hint}")
    missing = [k for k in POLICY_KEYS if k not in arrays]
    if missing:
        raise BadDataError(f"the policy file lacks {', '.join(missing)}; {hint}")
    layers: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(0, len(POLICY_KEYS), 2):
        w, b = (arrays[POLICY_KEYS[i]], arrays[POLICY_KEYS[i + 1]])
        for key, a in ((POLICY_KEYS[i], w), (POLICY_KEYS[i + 1], b)):
            if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
                raise BadDataError(f"the policy file's {key} is not a float array ({type(a).__name__}); {hint}")
            if not np.isfinite(a).all():
                raise BadDataError(f"the policy file's {key} holds NaN or inf; the file is damaged: download it again")
        if w.ndim != 2 or b.shape != (w.shape[0],) or (layers and w.shape[1] != layers[-1][0].shape[0]):
            raise BadDataError(f"the policy file's layer {POLICY_KEYS[i]} has shape {w.shape} with bias {b.shape}, "
                               "which does not chain into an MLP; " + hint)
        layers.append((w.astype(np.float64), b.astype(np.float64)))
    policy = MlpPolicy(tuple(layers))
    if policy.observation_size != observation_size or layers[-1][0].shape[0] != 2 * action_size:
        raise BadDataError(
            f"the policy maps {policy.observation_size} observations to {layers[-1][0].shape[0]} outputs; this robot "
            f"needs {observation_size} -> {2 * action_size} (mean and log std of {action_size} actions): is it the "
            f"other task's policy? {hint}"
        )
    return policy


def load_policy(path: str | Path, task_file: str, observation_size: int, action_size: int) -> MlpPolicy:
    """Read a morphology oracle's policy file (see the module docstring for its format).

    Raises:
        MissingDataError: no file at ``path``.
        BadDataError: the file is not a pickle, holds objects other than dicts and numpy arrays, or
            its arrays are not the expected MLP.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingDataError(f"no policy file at {path}; {_format_hint(task_file)}")
    try:
        arrays = _ArraysOnly(io.BytesIO(path.read_bytes())).load()
    except Exception as err:  # a truncated, foreign or refused pickle fails in many ways
        raise BadDataError(f"{path} is not a policy file: {err}; {_format_hint(task_file)}") from err
    return policy_from_arrays(arrays, task_file, observation_size, action_size)
