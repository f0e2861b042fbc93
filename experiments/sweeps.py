"""Config resolvers for sweeps that survive interruption.

`${remaining_trials:STORAGE,STUDY,TOTAL}` is the number of Optuna trials still
to run for a study to reach TOTAL finished ones (complete, pruned or failed).
The Optuna sweeper runs `n_trials` new trials on every invocation; setting
`n_trials` to this makes re-running an interrupted sweep continue it to its
total instead of starting the count again. A trial killed mid-run stays
"running" in the study and is not counted, so it is run again.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def remaining_trials(storage: str, study_name: str, total: int) -> int:
    """TOTAL minus the finished trials of `study_name` in `storage` (all of them for a new study)."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet
        return int(total)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state in finished)
    return max(int(total) - done, 0)


def resumed_seed(storage: str, study_name: str, seed: int) -> int:
    """`seed` plus the number of trials the study already holds.

    A continued sweep seeds its sampler afresh; without the offset its random
    start-up trials would repeat the parameters the interrupted sweep began with.
    """
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return int(seed)
    return int(seed) + len(study.get_trials(deepcopy=False))


def register_resolvers() -> None:
    """Registers `remaining_trials` and `resumed_seed` with OmegaConf (idempotent)."""
    for name, fn in (("remaining_trials", remaining_trials), ("resumed_seed", resumed_seed)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
