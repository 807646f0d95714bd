"""The Tune adapter: the study runner, per-class routing of searcher and scheduler, the trainable
(trial), launch state, hooks, console progress, and the one module that touches Ray's and Optuna's
private details."""
