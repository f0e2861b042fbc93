"""Evaluators: reports beyond a task's per-epoch metrics, one module each.

Tasks compose the ones their objective needs (`traces`: anomaly scores of
system-call traces; `codes`: an autoencoder's codes against PCA; `ais`: an
RBM's log-likelihood); `fid` scores any generative task against a trained
classifier and is chosen by config (`evaluator=fid`).
"""
