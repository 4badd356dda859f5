"""Per-member best-epoch selection for stacked ensembles.

Each stacked member keeps the weights of its own epoch with the best validation score (for
Tri-mentoring's proxies, the Pearson correlation, as the authors' released code keeps the
best-Pearson checkpoint of each proxy). The shape of Lightning's ``StochasticWeightAveraging``:
alternate weights are kept beside the module's and swapped in when training ends.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class BestMemberWeights(nn.Module):
    """The best validation score of every member (a buffer, in the model's ``state_dict``) and
    each member's weights at that score (:attr:`weights`, carried in checkpoints by the model).

    Args:
        members: number of stacked members ``M``; every parameter has the member dimension first.
    """

    def __init__(self, members: int) -> None:
        super().__init__()
        self.register_buffer("score", torch.full((members,), -math.inf))
        self.weights: dict[str, Tensor] | None = None

    @torch.no_grad()
    def update(self, scores: Tensor, params: dict[str, Tensor]) -> None:
        """Keep member ``m``'s slice of every parameter where ``scores[m]`` beats its best (NaN counts as -1)."""
        scores = torch.nan_to_num(scores.detach(), nan=-1.0).to(self.score)
        better = scores > self.score
        if not better.any():
            return
        self.score[better] = scores[better]
        if self.weights is None:
            self.weights = {k: v.detach().clone() for k, v in params.items()}
        else:
            for k, v in params.items():
                self.weights[k][better] = v.detach()[better]

    @torch.no_grad()
    def restore(self, params: dict[str, Tensor]) -> None:
        """Copy every member's best weights into ``params`` (nothing before the first update)."""
        if self.weights is not None:
            for k, v in params.items():
                v.copy_(self.weights[k])
