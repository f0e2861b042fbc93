"""Evaluators: reports beyond a task's per-epoch metrics, one module each.

Tasks compose the ones their objective needs (`traces`: anomaly scores of
system-call traces and their report; `codes`: an autoencoder's codes against
PCA; `ais`: an RBM's log-likelihood by annealed importance sampling;
`linear_probe`: a linear classifier on learnt features; `tta`: test-time
augmentation of a classifier); `fid` scores any generative task against a
trained classifier and is chosen by config (`evaluator=fid`), never by a task.
"""
