"""Seeds as a batch dimension: replicate ``k`` of a stacked run of seed ``s`` is the run of seed ``s + k``.

A :class:`~lightning_mbo.methods.Surrogate` with ``replicates = R`` stacks ``R`` runs of ``members``
networks each. Everything random in replicate ``k`` comes from generators seeded by its own seed
``s + k``, never from the global RNG: its initial weights (:meth:`SeedReplicates.reseed`, through
``StackedMLP.reset_members``), its train/validation split, bootstrap draw and per-epoch data order (the
datamodule's ``connect(..., seeds)``), the noise a method adds to its training batches
(:meth:`SeedReplicates.step_normals`, RoMA's), and its search (``DesignAscent`` runs a searcher per
replicate with that seed). A plain run (``R = 1``) takes the same path, so replicate ``k`` and a plain run of
seed ``s + k`` build the same networks and the same designs (tests/methods/test_stacked_seeds.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_mbo.data.datamodule import dist_rank_world

#: Spawn key of the training-noise stream (apart from the weights', split's and data order's).
NOISE_STREAM = 0x6E6F6973


class SeedReplicates:
    """What a stacked module of ``replicates`` runs needs to seed each run on its own (a mixin of
    :class:`~lightning_mbo.methods.Surrogate`: it reads ``replicates``, ``num_members``,
    ``per_member_split`` and the stacked network ``net``)."""

    #: Replicate ``k`` of a stacked run is the plain run of seed ``s + k``, so a benchmark grid may stack
    #: seeds (``stack: true``). Proven for every shipped method in tests/methods/test_stacked_seeds.py; a
    #: method that draws anything random outside its replicates' seeds (the global RNG) sets it False.
    stacks_seeds: bool = True

    def replicate_seeds(self, seed: int) -> list[int]:
        """The seed of each replicate of a run of ``seed``: ``seed, seed + 1, ...``."""
        return [int(seed) + k for k in range(self.replicates)]

    def connect_data(self, datamodule: Any) -> None:
        """Before fitting: hand an ``MBODataModule`` the stacked members and each replicate's seed (its
        split, bootstrap and data order), and initialise each replicate's members from its seed alone."""
        seeds = self.replicate_seeds(datamodule.seed)
        datamodule.connect(members=self.num_members, per_member_split=self.per_member_split, seeds=seeds)
        self.reseed(seeds)
        self.noise_seeds = seeds

    def step_normals(self, like: Tensor, rows: int | None, step: int) -> Tensor:
        """Standard normals shaped like a training batch ``like`` ``(M, b, ...)``, replicate ``k``'s from a
        generator seeded by its own seed and ``step`` alone (so a resumed run draws what an uninterrupted
        one drew). Each replicate's block is drawn for the global batch of ``rows`` rows and this rank
        keeps its share, as the datamodule splits the rows, so data-parallel runs add the noise of one
        process. Without seeds (a module fitted without ``connect_data``) the global RNG draws them."""
        seeds = getattr(self, "noise_seeds", None)
        if seeds is None or len(seeds) != self.replicates:
            return torch.randn_like(like)
        rank, world = dist_rank_world()
        m, b, rest = like.shape[0] // len(seeds), like.shape[1], like.shape[2:]
        blocks = []
        for seed in seeds:
            state = np.random.SeedSequence([int(seed), int(step), NOISE_STREAM]).generate_state(1)[0]
            full = torch.randn((m, rows or b, *rest), generator=torch.Generator().manual_seed(int(state)))
            blocks.append(torch.tensor_split(full, world, dim=1)[rank])
        return torch.cat(blocks).to(like)

    def reseed(self, seeds: Sequence[int]) -> None:
        """Replicate ``k``'s members from ``torch.Generator().manual_seed(seeds[k])`` (not the global RNG)."""
        if len(seeds) != self.replicates:
            raise ValueError(f"reseed needs one seed per replicate ({self.replicates}), got {len(seeds)}")
        m = self.num_members // self.replicates  # networks per replicate (RoMA: one, without a members setting)
        for k, seed in enumerate(seeds):
            self.net.reset_members(k * m, (k + 1) * m, torch.Generator().manual_seed(int(seed)))
