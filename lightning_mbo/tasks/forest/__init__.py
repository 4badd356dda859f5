"""Superconductor-RandomForest-v0's oracle: design-bench's saved scikit-learn forest, read without running its
pickle's code (:mod:`~lightning_mbo.tasks.forest.sklearn_pickle`) and fed as design-bench fed it
(:mod:`~lightning_mbo.tasks.forest.oracle`). scikit-learn is imported only when a forest is read or fitted."""

from lightning_mbo.tasks.forest.oracle import ForestOracle, forest_oracle, refit_forest

__all__ = ["ForestOracle", "forest_oracle", "refit_forest"]
