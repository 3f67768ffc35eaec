"""Training: the recipe (validation fit, rankers, refit, lists), updates, and the Spark engine."""
