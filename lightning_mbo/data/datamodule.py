"""The LightningDataModule over a design-bench task."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from lightning_mbo.functional.movement import continuous_movement, discrete_movement
from lightning_mbo.search.contract import SearchData
from lightning_mbo.tasks.encoding import zscore_stats
from lightning_mbo.tasks.task import Encoding, OracleNormalization, Subsample, Task
from lightning_mbo.validation import SettingsError, check_range


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the data-parallel group, ``(0, 1)`` in one process."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _blocks(members: int, seeds: Sequence[int]) -> int:
    """Members per seed: ``members`` stacked networks in ``len(seeds)`` equal blocks."""
    if members % len(seeds):
        raise ValueError(f"{members} stacked members do not split into {len(seeds)} equal blocks, one per seed")
    return members // len(seeds)


class MemberBatches(IterableDataset):
    """Batches for ``M`` stacked members, each member with its own data order.

    Every epoch each member draws its own permutation of its own training rows; batch ``b``
    is the ``(M, B)`` block of row indices ``[b*B, (b+1)*B)`` of those permutations. Under
    DDP the GLOBAL batch is split into contiguous parts, one per rank, so that ``W`` processes
    see exactly the rows one process would. Items are ``(x, y, rows)``: ``(M, b, D)`` features,
    ``(M, b)`` scores of this rank's share and the global batch's row count; with ``weights``
    also ``(M, b)`` the rows' weights and ``(M,)`` their sum over the global batch.

    Args:
        x: ``(N, D)`` normalised features.
        y: ``(N,)`` normalised scores.
        rows: ``(M, n)`` row indices each member trains on.
        batch_size: global batch size ``B``.
        shuffle: draw a permutation per epoch and member (else keep ``rows``' order).
        seed: base seed, or one per block of stacked runs (seeds as a batch dimension: the
            ``M`` rows come in ``len(seed)`` equal blocks); a block's permutations of an epoch
            depend on (its seed, epoch) only, so a block orders its rows as a run of that seed alone.
        epoch_fn: returns the current epoch (so a resumed run draws the same orders).
        drop_last: drop the last incomplete batch.
        weights: ``(M, N)`` each member's weight of every row (bootstrap counts), or ``None``.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        rows: Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int | Sequence[int],
        epoch_fn: Callable[[], int] = lambda: 0,
        drop_last: bool = False,
        weights: Tensor | None = None,
    ) -> None:
        self.x, self.y, self.rows = x, y, rows
        self.batch_size, self.shuffle = batch_size, shuffle
        self.seeds = [int(seed)] if isinstance(seed, int) else [int(s) for s in seed]
        self.epoch_fn, self.drop_last = epoch_fn, drop_last
        self.weights = weights

    def __len__(self) -> int:
        n = self.rows.shape[1]
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def order(self, epoch: int) -> Tensor:
        """``(M, n)`` row indices in the order of ``epoch``."""
        if not self.shuffle:
            return self.rows
        blocks = self.rows.shape[0] // len(self.seeds)
        perm = torch.cat([torch.rand((blocks, self.rows.shape[1]), generator=_generator(s * 1_000_003 + epoch))
                          .argsort(dim=1) for s in self.seeds])
        return torch.gather(self.rows, 1, perm)

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        rank, world = dist_rank_world()
        order = self.order(self.epoch_fn())
        for b in range(len(self)):
            idx = order[:, b * self.batch_size:(b + 1) * self.batch_size]
            rows = idx.shape[1]
            total = None if self.weights is None else torch.gather(self.weights, 1, idx).sum(1)
            idx = torch.tensor_split(idx, world, dim=1)[rank]
            # The global batch's size (and weight) travels along, so losses average over rows, not
            # over ranks, also when a last batch does not split evenly (a rank may get no rows).
            if total is None:
                yield self.x[idx], self.y[idx], rows
            else:
                yield self.x[idx], self.y[idx], rows, torch.gather(self.weights, 1, idx), total


class MBODataModule(pl.LightningDataModule):
    """Batches of normalised designs and scores of one design-bench task, and what design
    ascent needs: starting points, decoding, the oracle and normalised scoring.

    The task is loaded when the module is built, so ``input_dim`` is known at once (the CLI
    links it into the model). How many stacked members the batches are for, and whether each
    member gets its own train/validation split, is handed in by :meth:`connect` before fitting
    (:class:`~lightning_mbo.cli.MBOTrainer` does it from the model; a plain ``pl.Trainer``
    user calls it).

    Args:
        task: design-bench task name, e.g. ``TFBind8-Exact-v0``.
        data_dir: design-bench data directory (else ``$LIGHTNING_MBO_DATA_DIR``, an installed
            design_bench's data, or the shipped TFBind8).
        batch_size: global training batch size.
        val_size: rows held out for validation: a count (>= 1) or a fraction (< 1).
        max_samples: visible rows to keep (None: the task's default; 0: all).
        subsample: how max_samples rows are chosen: ``random`` (seeded), ``stride`` or ``stride_floor``
            (over y-sorted rows; see :func:`lightning_mbo.tasks.subsample_indices`).
        normalize_x: z-score the (encoded) designs (not with ``encoding: integers``).
        normalize_y: z-score the scores.
        seed: seed of splits, subsampling and data order (``null``: the run's ``seed_everything``
            on the command line, 0 elsewhere).
        bootstrap: each member trains on a bootstrap resample of its training rows, as
            design-baselines' ensembles (Trabucco et al., ICML 2022): a row's weight in the member's
            loss is how often it is drawn in ``n`` draws with replacement (``n`` training rows), and
            the member's batch loss is ``Σ w · loss / Σ w``.
        encoding: discrete designs as design-bench ``logits`` (default) or as class ``integers``
            (for members that embed the sequence, e.g. ``model.init_args.embedding``; searched by a
            searcher that proposes sequences, e.g. REINFORCE).
        drop_last: drop the last incomplete training batch.
        oracle_normalization: Superconductor's saved random forest: ``released`` (design-bench
            2.0.20 as it ran: designs normalised by a fresh 2000-row draw of the full dataset, seeded
            by ``seed``) or ``split`` (by the split the forest was fitted on); other tasks ignore it.
    """

    def __init__(
        self,
        task: str = "TFBind8-Exact-v0",
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: float = 200,
        max_samples: int | None = None,
        subsample: Subsample = "random",
        normalize_x: bool = True,
        normalize_y: bool = True,
        seed: int | None = None,
        drop_last: bool = False,
        bootstrap: bool = False,
        encoding: Encoding = "logits",
        oracle_normalization: OracleNormalization = "released",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_range("batch_size (--data.batch_size)", batch_size, 1)
        check_range("val_size (--data.val_size)", val_size, 0)
        if max_samples is not None:
            check_range("max_samples (--data.max_samples)", max_samples, 0, hint="0 keeps every visible row")
        self.seed = 0 if seed is None else int(seed)
        if encoding == "integers" and normalize_x:
            raise SettingsError("class integers are not z-scored: set --data.normalize_x false with --data.encoding "
                                "integers")
        self.task = Task(task, data_dir=data_dir, max_samples=max_samples, subsample=subsample, seed=self.seed,
                         encoding=encoding, oracle_normalization=oracle_normalization)
        # What a stacked run's seeds cannot vary: the visible rows' random subsample, the forest's released
        # normalisation draw (both seeded by ``seed`` alone).
        keep = self.task.spec.max_samples if max_samples is None else max_samples
        self._seeded_task = (bool(keep) and subsample == "random") or (
            self.task.spec.oracle == "random_forest" and oracle_normalization == "released")
        features = self.task.encode(self.task.x)
        if normalize_x:
            mean, std = zscore_stats(features)
        else:
            mean, std = torch.zeros(features.shape[1]), torch.ones(features.shape[1])
        y = torch.as_tensor(self.task.y, dtype=torch.float32)
        y_mean, y_std = zscore_stats(y) if normalize_y else (torch.tensor(0.0), torch.tensor(1.0))
        self.x_mean, self.x_std, self.y_mean, self.y_std = mean, std, y_mean, y_std
        self.x = (features - mean) / std
        self.y = (y - y_mean) / y_std
        n = len(self.y)
        n_val = int(round(val_size * n)) if val_size < 1 else int(val_size)
        if not 0 <= n_val < n:
            raise SettingsError(f"val_size={val_size} leaves no training rows out of {n} (--data.val_size)")
        self.n_val = n_val
        self.members, self.per_member_split = 1, False
        self.seeds = [self.seed]
        self.train_rows: Tensor | None = None
        self.val_rows: Tensor | None = None

    def connect(self, members: int, per_member_split: bool = False, seeds: Sequence[int] | None = None) -> None:
        """Settings known only once the model is: how many stacked members each batch feeds.

        Args:
            members: stacked networks the model trains (members of every replicate); each
                gets its own data order.
            per_member_split: each member draws its own train/validation split (else one split
                per seed).
            seeds: one seed per replicate (seeds as a batch dimension): the members come in
                ``len(seeds)`` equal blocks and block ``k``'s split, bootstrap draw and data order
                are those a run of ``seeds[k]`` alone draws. ``None``: ``[seed]``.
        """
        check_range("members", members, 1)
        seeds = [self.seed] if seeds is None else [int(s) for s in seeds]
        _blocks(members, seeds)
        if len(set(seeds)) > 1 and self._seeded_task:
            raise SettingsError(f"{self.task.name}'s visible rows or oracle depend on the seed (a random "
                                "max_samples subsample or a seeded oracle normalisation), so one stacked run cannot "
                                "stand for several seeds: run the seeds as separate jobs (replicates 1)")
        if (members, per_member_split, seeds) != (self.members, self.per_member_split, self.seeds):
            self.members, self.per_member_split, self.seeds = int(members), bool(per_member_split), seeds
            self.train_rows = self.val_rows = None  # split again for the new layout

    # --- what the rest of the framework asks for -----------------------------------------
    @property
    def input_dim(self) -> int:
        """Flattened size of an encoded design."""
        return self.task.input_dim

    def split(self, members: int, per_member: bool) -> tuple[Tensor, Tensor]:
        """``(M, n_train)`` and ``(M, n_val)`` row indices, each seed's block of members drawn from
        its own generator; one split per seed unless ``per_member``."""
        n, block = len(self.y), _blocks(members, self.seeds)
        perms = torch.cat([torch.rand((block if per_member else 1, n), generator=_generator(s)).argsort(dim=1)
                           .expand(block, n) for s in self.seeds])
        return perms[:, self.n_val:].contiguous(), perms[:, :self.n_val].contiguous()

    def setup(self, stage: str | None = None) -> None:
        self.train_rows, self.val_rows = self.split(self.members, self.per_member_split)

    def bootstrap_weights(self) -> Tensor:
        """``(M, N)`` each member's bootstrap count of every row: ``n`` draws with replacement
        from the member's ``n`` training rows (seeded; held-out rows get 0)."""
        if self.train_rows is None:
            self.setup("fit")
        members, n = self.train_rows.shape
        block = _blocks(members, self.seeds)
        draws = torch.cat([torch.randint(0, n, (block, n), generator=_generator(s * 1_000_003 + 999_983))
                           for s in self.seeds])
        counts = torch.zeros(members, n).scatter_add_(1, draws, torch.ones(members, n))
        return torch.zeros(members, len(self.y)).scatter_(1, self.train_rows, counts)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        if self.train_rows is None:
            self.setup("fit")
        weights = self.bootstrap_weights() if self.hparams.bootstrap else None
        ds = MemberBatches(self.x, self.y, self.train_rows, self.hparams.batch_size, True, self.seeds,
                           self._epoch, self.hparams.drop_last, weights)
        return DataLoader(ds, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        if self.val_rows is None:
            self.setup("fit")
        # Validation rows in fixed order, 4096 at a time.
        ds = MemberBatches(self.x, self.y, self.val_rows, 4096, False, self.seeds)
        return DataLoader(ds, batch_size=None)

    def starting_designs(self, k: int) -> Tensor:
        """The ``k`` best visible designs, normalised features ``(k, input_dim)``."""
        raw, _ = self.task.top_k(k)
        return self.normalize_x(self.task.encode(raw))

    def search_data(self) -> SearchData:
        """What design search hands the method: all visible rows, normalised, and the task's kind."""
        if not self.task.is_discrete:
            return SearchData(x=self.x, y=self.y, discrete=False)
        return SearchData(x=self.x, y=self.y, discrete=True, num_classes=self.task.spec.num_classes,
                          integers=self.task.encoding == "integers",
                          encode=lambda designs: self.normalize_x(self.task.encode(designs)),
                          decode=lambda z: torch.as_tensor(self.decode(z)))

    def movement(self, z: Tensor, designs: np.ndarray, blocks: list[np.ndarray], k: int) -> list[dict[str, float]]:
        """How far each block of final designs moved from the ``k`` starting designs, and how many are
        already visible rows (:mod:`lightning_mbo.functional.movement`): one dict per block.

        Args:
            z: ``(n, input_dim)`` the final designs, normalised.
            designs: the same designs decoded (raw).
            blocks: indices of each replicate's candidates.
            k: how many starting designs the search began from.
        """
        starts = self.task.top_k(k)[0]
        visible = self.task.visible_designs()
        if self.task.is_discrete:
            return [discrete_movement(designs[b], starts, visible) for b in blocks]
        z = z.detach().float().cpu()
        starts_z, visible_z = (self.normalize_x(self.task.encode(a)) for a in (starts, visible))
        return [continuous_movement(z[b], starts_z, visible_z) for b in blocks]

    def normalize_x(self, features: Tensor) -> Tensor:
        return (features - self.x_mean.to(features)) / self.x_std.to(features)

    def denormalize_x(self, z: Tensor) -> Tensor:
        return z * self.x_std.to(z) + self.x_mean.to(z)

    def denormalize_y(self, y: Tensor) -> Tensor:
        return y * self.y_std.to(y) + self.y_mean.to(y)

    def decode(self, z: Tensor) -> np.ndarray:
        """Normalised features ``(n, input_dim)`` -> raw designs (integers for discrete tasks)."""
        return self.task.decode(self.denormalize_x(z.detach().float().cpu()))

    def score(self, designs: np.ndarray) -> np.ndarray:
        """Raw oracle scores ``(n,)`` of raw designs."""
        return self.task.score(designs)

    def normalize_score(self, y: np.ndarray) -> np.ndarray:
        return self.task.normalize_score(y)

    # --- checkpointed state: normalisation statistics -------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        return {"x_mean": self.x_mean, "x_std": self.x_std, "y_mean": self.y_mean, "y_std": self.y_std}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for key, value in state.items():
            mine = getattr(self, key)
            if mine.shape != value.shape or not torch.allclose(mine, value.to(mine)):
                raise ValueError(
                    f"the checkpoint's normalisation statistic {key} differs from this data's; the checkpoint "
                    f"was trained on other data (task, max_samples or normalisation settings differ)"
                )
