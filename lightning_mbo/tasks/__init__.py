"""design-bench tasks without Lightning: names, shard reader, encodings, split, oracles.

The common core is here (``registry``, ``io``, ``encoding``, ``task``, ``oracles``, ``synthetic``); each
family of oracles has its own subpackage (``exact``, ``forest``, ``morphology``), and the ``tasks`` and
``data`` commands live in ``commands``. Imports point down: core <- oracle families <- ``task`` <- commands.
"""

from lightning_mbo.tasks.encoding import from_logits, to_logits
from lightning_mbo.tasks.exact import ExactOracle
from lightning_mbo.tasks.io import BadDataError, MissingDataError, load_task_data, read_shards, read_task_data
from lightning_mbo.tasks.oracles import DesignBenchOracle, DesignNotFoundError
from lightning_mbo.tasks.registry import TASKS, TaskSpec, UnknownTaskError, get_spec, register
from lightning_mbo.tasks.synthetic import QUADRATIC
from lightning_mbo.tasks.task import Task, subsample_indices, visible_indices

__all__ = [
    "QUADRATIC", "TASKS", "BadDataError", "DesignBenchOracle", "DesignNotFoundError", "ExactOracle",
    "MissingDataError", "Task", "TaskSpec", "UnknownTaskError", "from_logits", "get_spec", "load_task_data",
    "read_shards", "read_task_data", "register", "subsample_indices", "to_logits", "visible_indices",
]
