"""The contract between a method and design search.

A method (a LightningModule) offers design search what :class:`Searchable` declares: a score
function over a batch of designs, an optional per-step hook, its default search settings, and a
name and a summary for results. Search hands the method what it may use through
:class:`SearchData` (the static training set and task facts), never the datamodule. The search
settings themselves live in one place, the search callback
(:class:`~lightning_mbo.callbacks.DesignAscent`, ``--ascent.*`` on the command line), which
falls back to the method's :meth:`Searchable.search_defaults` for what it is not given.

Plain torch, no Lightning.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from lightning_mbo.search.gradient import AscentResult

from lightning_mbo.validation import SettingsError, check_choice, check_range

AscentOptimizer = Literal["sgd", "adam"]

#: Called as ``hook(x, t)`` before step ``t`` with the detached designs ``(C, D)``; may return
#: per-step statistics (name -> value), which search collects into one series per name.
StepHook = Callable[[Tensor, int], Mapping[str, float] | None]


@dataclass(frozen=True)
class SearchSettings:
    """Budget and rule of one gradient-based design search.

    Attributes:
        steps: ascent steps ``T`` (0: hand back the starting designs).
        lr: step size (> 0).
        optimizer: ``sgd``, design-baselines' plain rule ``x ← x + lr ∇f(x)``, or ``adam``,
            ``torch.optim.Adam`` on ``-f`` (Tri-mentoring).
    """

    steps: int
    lr: float
    optimizer: AscentOptimizer = "sgd"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise SettingsError(f"ascent steps must be a whole number >= 0, got {self.steps!r} (set --ascent.steps)")
        check_range("ascent lr (--ascent.lr)", self.lr, 0, strict=True, hint="a negative step size descends")
        check_choice("ascent optimizer (--ascent.optimizer)", self.optimizer, AscentOptimizer)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchData:
    """What search hands a method: the static training set and the task facts it may use.

    Attributes:
        x: ``(N, D)`` normalised (encoded) visible designs.
        y: ``(N,)`` their normalised scores.
        discrete: whether the task's designs are discrete (trained on as logits).
        num_classes: alphabet size of a discrete task (``None`` for continuous ones).
        integers: the features are class integers (not continuous): only searchers that propose
            sequences apply.
        encode: integer designs ``(n, L)`` -> normalised features ``(n, D)`` (discrete tasks), for
            searchers that propose sequences (REINFORCE).
        decode: normalised features ``(n, D)`` -> integer designs ``(n, L)`` (discrete tasks).
    """

    x: Tensor
    y: Tensor
    discrete: bool
    num_classes: int | None = None
    integers: bool = False
    encode: Callable[[Tensor], Tensor] | None = None
    decode: Callable[[Tensor], Tensor] | None = None

    @property
    def input_dim(self) -> int:
        """Flattened size ``D`` of a design."""
        return int(self.x.shape[-1])


@dataclass(frozen=True)
class SearchObjective:
    """What design search climbs. Calling it is calling ``score``.

    Attributes:
        score: ``(C, D) -> (C,)`` the predicted (normalised) score of each candidate,
            differentiable with respect to the designs; candidates are independent.
        before_step: optional :data:`StepHook` run before every step (Tri-mentoring mentors its
            proxy copies there).
        predictive: optional ``(C, D) -> (2, K, C)``: the means (``[0]``) and standard deviations
            (``[1]``) of the ``K`` Gaussian members that score each candidate (its replicate's), for
            searchers that need the predictive distribution, not only its mean (CbAS).
    """

    score: Callable[[Tensor], Tensor]
    before_step: StepHook | None = None
    predictive: Callable[[Tensor], Tensor] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        return self.score(x)


@runtime_checkable
class Searchable(Protocol):
    """What a method offers design search (every method in :mod:`lightning_mbo.methods`).

    Attributes:
        replicates: independent runs stacked in the module; search gives each replicate its own
            block of candidates and its own results row.
    """

    replicates: int

    def search_defaults(self, data: SearchData) -> SearchSettings:
        """The method's own search settings (its paper's or released code's)."""
        ...

    def search_objective(self, x0: Tensor, data: SearchData, candidate_ids: Tensor, num_total: int) -> SearchObjective:
        """The objective for candidates ``x0`` ``(C, D)``, which are ``candidate_ids`` ``(C,)`` of
        ``num_total`` over all processes (in ``replicates`` equal blocks)."""
        ...

    def method_name(self) -> str:
        """A short name for results, e.g. ``ens_mean+ignite``."""
        ...

    def method_summary(self, replicate: int) -> dict[str, Any]:
        """Method state worth reporting next to replicate ``replicate``'s scores."""
        ...


class Searcher:
    """An optimizer over designs (``--ascent.searcher``; :class:`~lightning_mbo.search.GradientAscent`
    when none is given).

    A subclass takes its settings in ``__init__`` (they become ``--ascent.searcher.init_args.*``: the
    one home of its budget) and implements :meth:`search`. It works on the normalised design
    features and the method's score function, never on the model itself, so any method's surrogate
    can drive it.
    """

    #: The name results give it (``cma_es`` in ``cma_es/ens_mean``).
    name: ClassVar[str] = "searcher"
    #: Whether it searches every replicate's candidates in one call (candidates independent, the
    #: objective scoring each by its own replicate's members); otherwise search runs it once per
    #: replicate, with that replicate's seed.
    joint_replicates: ClassVar[bool] = False
    #: Whether it calls the objective's ``before_step`` hook (Tri-mentoring's mentoring); a method
    #: with a hook refuses a searcher that would skip it.
    runs_step_hook: ClassVar[bool] = False

    def configure(self, defaults: SearchSettings) -> Searcher:
        """This searcher with what it leaves unset taken from the method's ``search_defaults``
        (gradient ascent's steps, step size and rule); a searcher with a budget of its own returns
        itself."""
        return self

    def result_name(self, method: str) -> str:
        """The results name of ``method`` searched by this searcher (``cma_es/ens_mean``)."""
        return f"{self.name}/{method}"

    def search(self, x0: Tensor, score: Callable[[Tensor], Tensor], data: SearchData, candidate_ids: Tensor,
               num_candidates: int, seed: int) -> AscentResult:
        """Search from ``x0``.

        Args:
            x0: ``(C, D)`` this process's starting designs (normalised).
            score: ``(C, D) -> (C,)`` the method's predicted score, row ``i`` scored as candidate ``i``
                (the method's :class:`SearchObjective`, so a searcher may read its ``predictive``).
            data: the visible designs and scores (normalised).
            candidate_ids: ``(C,)`` the candidates' indices over all processes.
            num_candidates: designs handed back per replicate.
            seed: the run's seed.

        Returns:
            ``(C, D)`` final designs and a ``(T + 1, C)`` trajectory of predicted scores.
        """
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The settings, as results.json records them (with ``searcher``: the name)."""
        return {"searcher": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}
