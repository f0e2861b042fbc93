"""Token sequences (text, system-call traces) cut into fixed-shape windows for `ArrayLoader`.

A language model reads `tokens` int32 [W, T] and predicts `targets` int32
[W, T] (the next token at every position); `token_mask` bool [W, T] says which
positions count in the loss and in scores (False for padding and for context
positions that an earlier window already scored). Windows of one split all
have the same T, so a split is one set of dense arrays that the in-memory
loader batches like images.

* Text (tiny Shakespeare): characters are tokens, numbered by their position
  in a fixed `vocabulary` string. Training windows start at every `stride`-th
  character (stride 1: every offset, nanoGPT's random blocks drawn without
  replacement; the windows are read-only views of one array, so this costs no
  memory). Evaluation windows tile the split so that each character is
  predicted exactly once.
* Traces (ADFA-LD): each trace becomes `[BOS, s_1, ..., s_{L-1}]` ->
  `[s_1, ..., s_L]` with BOS = 0 and token = system-call number, so every call,
  the first included, is predicted. Long traces are split into windows of T
  positions; in evaluation windows overlap by `context` positions that are
  read but not scored, so every call is scored once and (after the first
  window) with at least `context` calls of history.

`make_examples` turns the raw splits of a dataset (as `jaxdl.data.sources`
loads them) into these windows; `experiment.run` calls it after loading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxdl.data.text import encode_text

BOS = 0  # start-of-trace token (trace language models); also the padding value under token_mask False

#: Window groups of an anomaly-evaluation split.
HOLDOUT, TEST_NORMAL, ATTACK = 0, 1, 2


def sliding_windows(ids: np.ndarray, seq_len: int, stride: int = 1) -> dict[str, np.ndarray]:
    """Every `stride`-th window of `seq_len` inputs and their next-token targets, as views.

    Args:
      ids: int32 [N] token ids.
      seq_len: T.
      stride: offset between consecutive window starts.

    Returns:
      tokens, targets int32 [W, T] with targets[w, t] = ids[w * stride + t + 1],
      token_mask bool [W, T] (all True); W = (N - T - 1) // stride + 1. All
      three are read-only views, so W * T may exceed memory.

    Raises:
      ValueError: the sequence is shorter than T + 1.
    """
    if len(ids) < seq_len + 1:
        raise ValueError(f"A sequence of {len(ids)} tokens is shorter than one window of seq_len={seq_len} plus its target.")
    view = np.lib.stride_tricks.sliding_window_view(ids, seq_len + 1)[::stride]  # [W, T + 1]
    return {"tokens": view[:, :-1], "targets": view[:, 1:], "token_mask": np.broadcast_to(True, (len(view), seq_len))}


def tile(inputs: np.ndarray, targets: np.ndarray, seq_len: int, context: int = 0) -> dict[str, np.ndarray]:
    """Cuts one sequence into windows that score every position exactly once.

    Window k reads positions [k * S, k * S + T) with S = T - context and scores
    those not scored by window k - 1 (all of window 0). The last window is
    padded with BOS and masked.

    Args:
      inputs, targets: [L] int token ids (targets[i] follows inputs[i]).
      seq_len: T.
      context: positions at the start of each later window that are read but not scored.

    Returns:
      tokens, targets int32 [K, T] and token_mask bool [K, T]; K = 1 + ceil(max(L - T, 0) / S).

    Raises:
      ValueError: context not in [0, T).
    """
    if not 0 <= context < seq_len:
        raise ValueError(f"context={context} must be in [0, seq_len={seq_len}).")
    length, step = len(inputs), seq_len - context
    count = 1 + -(-max(length - seq_len, 0) // step)
    tokens = np.full((count, seq_len), BOS, np.int32)
    out_targets = np.full((count, seq_len), BOS, np.int32)
    mask = np.zeros((count, seq_len), bool)
    for k in range(count):
        start = k * step
        piece = slice(start, min(start + seq_len, length))
        n = piece.stop - piece.start
        tokens[k, :n], out_targets[k, :n] = inputs[piece], targets[piece]
        mask[k, (context if k else 0) : n] = True
    return {"tokens": tokens, "targets": out_targets, "token_mask": mask}


def trace_windows(traces: Sequence[np.ndarray], seq_len: int, context: int = 0) -> dict[str, np.ndarray]:
    """Windows of system-call traces for a next-call language model.

    Args:
      traces: K traces, each int [L_k] of system-call numbers. Token = call
        number; call 0 (restart_syscall on 32-bit x86) would share its id with
        BOS, which is harmless for ADFA-LD, whose calls are numbered 1..340.
      seq_len: T.
      context: see `tile`.

    Returns:
      tokens, targets int32 [W, T], token_mask bool [W, T], and `trace` int32 [W]
      (which trace each window comes from, 0..K-1). Each call of each trace is
      scored exactly once.
    """
    parts, owner = [], []
    for k, trace in enumerate(traces):
        trace = np.asarray(trace, np.int32)
        windows = tile(np.concatenate([[BOS], trace[:-1]]).astype(np.int32), trace, seq_len, context)
        parts.append(windows)
        owner.append(np.full(len(windows["tokens"]), k, np.int32))
    out = {key: np.concatenate([p[key] for p in parts]) for key in ("tokens", "targets", "token_mask")}
    out["trace"] = np.concatenate(owner)
    return out


def _rows(column: np.ndarray) -> list[np.ndarray]:
    """Rows of a stacked [N, L] array or items of a ragged object array [N]."""
    return [np.asarray(row) for row in column]


def _limit(arrays: dict[str, np.ndarray], limit: int | None) -> dict[str, np.ndarray]:
    return arrays if limit is None else {k: v[:limit] for k, v in arrays.items()}


def text_examples(
    train: Mapping[str, np.ndarray],
    eval: Mapping[str, np.ndarray],  # noqa: A002 (the split's role)
    *,
    seq_len: int,
    vocabulary: str,
    train_stride: int = 1,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    **_: Any,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Character windows of a text dataset whose splits hold one `text` record each.

    Args:
      train, eval: raw splits with `text` uint8 [1, N] (as `load_arrays` returns them).
      seq_len: T, characters per window.
      vocabulary: token table (see `jaxdl.data.text.encode_text`).
      train_stride: characters between training window starts.
      train_limit, eval_limit: keep only the first windows (quick runs).

    Returns:
      (train windows, eval windows): see `sliding_windows` and `tile`
      (context 0: eval windows tile the split and score each character once).
    """
    train_ids = encode_text(np.concatenate(_rows(train["text"])), vocabulary)
    eval_ids = encode_text(np.concatenate(_rows(eval["text"])), vocabulary)
    train_windows = sliding_windows(train_ids, seq_len, train_stride)
    eval_windows = tile(eval_ids[:-1], eval_ids[1:], seq_len, context=0)
    return _limit(train_windows, train_limit), _limit(eval_windows, eval_limit)


def holdout_groups(label: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Assigns each trace of an anomaly-evaluation split to HOLDOUT, TEST_NORMAL or ATTACK.

    Args:
      label: int [K], 0 normal, 1 attack.
      fraction: share of the normal traces held out (round(fraction * normals) of them).
      seed: draws which normal traces are held out.

    Returns:
      int32 [K] group per trace; the same arguments always give the same groups.
    """
    label = np.asarray(label).astype(np.int32)
    normal = np.flatnonzero(label == 0)
    chosen = np.random.default_rng(seed).permutation(len(normal))[: round(fraction * len(normal))]
    group = np.where(label == 1, ATTACK, TEST_NORMAL).astype(np.int32)
    group[normal[chosen]] = HOLDOUT
    return group


def trace_examples(
    train: Mapping[str, np.ndarray],
    eval: Mapping[str, np.ndarray],  # noqa: A002
    *,
    seq_len: int,
    vocab_size: int,
    eval_context: int = 0,
    holdout_fraction: float = 0.2,
    holdout_seed: int = 0,
    supervised_attack_fraction: float = 0.0,
    supervised_seed: int = 0,
    train_limit: int | None = None,
    eval_limit: int | None = None,
    **_: Any,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Windows of system-call traces: a language model's training set and an anomaly-evaluation set.

    The eval split holds normal and attack traces (`label` 0/1). A fixed random
    `holdout_fraction` of its normal traces (drawn from `holdout_seed`) is the
    held-out normal set used for early stopping and for calibrating the alarm
    threshold; the remaining normal traces and all attacks are the test set
    (Kim et al. 2016: trained on ADFA-LD's training traces, tested on
    validation-normal vs attack).

    Args:
      train: raw training split with `syscalls` (ragged [N] of int32 [L]).
      eval: raw eval split with `syscalls`, `label` (0 normal, 1 attack),
        `family` and optionally `name`.
      seq_len: T; eval_context: see `tile` (training windows do not overlap).
      vocab_size: V; every system-call number must be below it.
      supervised_attack_fraction: for a supervised classifier (0: none): this
        share of the eval split's attack traces, drawn from `supervised_seed`,
        moves to the training set, and windows carry `label` (0 normal, 1
        attack); the test set keeps the other attacks. The held-out normal
        traces are the same as without it.
      train_limit, eval_limit: keep only the first windows (quick runs).

    Returns:
      (train, eval) windows. Both have tokens, targets, token_mask, trace; eval
      windows also carry `group` int32 (HOLDOUT, TEST_NORMAL, ATTACK),
      `family` int32 and `name` (object, the trace's file name) per window.

    Raises:
      ValueError: a system-call number >= vocab_size, or a bad fraction.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"data.holdout_fraction={holdout_fraction} must be in (0, 1).")
    if not 0.0 <= supervised_attack_fraction < 1.0:
        raise ValueError(f"data.supervised_attack_fraction={supervised_attack_fraction} must be in [0, 1).")
    train_traces, eval_traces = _rows(train["syscalls"]), _rows(eval["syscalls"])
    for split, traces in (("train", train_traces), ("eval", eval_traces)):
        top = max(int(t.max()) for t in traces)
        if top >= vocab_size:
            raise ValueError(f"The {split} split holds system-call number {top} >= vocab_size={vocab_size}; raise vocab_size.")
    eval = dict(eval)
    train_label = np.zeros(len(train_traces), np.int32)
    if supervised_attack_fraction:
        attacks = np.flatnonzero(np.asarray(eval["label"]) == 1)
        chosen = np.random.default_rng(supervised_seed).permutation(len(attacks))
        moved = np.sort(attacks[chosen[: round(supervised_attack_fraction * len(attacks))]])
        keep = np.setdiff1d(np.arange(len(eval_traces)), moved)
        train_traces = train_traces + [eval_traces[i] for i in moved]
        train_label = np.concatenate([train_label, np.ones(len(moved), np.int32)])
        eval = {k: np.asarray(v)[keep] for k, v in eval.items()}
        eval_traces = [eval_traces[i] for i in keep]
    train_windows = trace_windows(train_traces, seq_len, context=0)

    group = holdout_groups(eval["label"], holdout_fraction, holdout_seed)
    eval_windows = trace_windows(eval_traces, seq_len, context=eval_context)
    owner = eval_windows["trace"]
    eval_windows["group"] = group[owner]
    eval_windows["family"] = np.asarray(eval["family"]).astype(np.int32)[owner]
    if supervised_attack_fraction:
        train_windows["label"] = train_label[train_windows["trace"]]
        eval_windows["label"] = np.asarray(eval["label"]).astype(np.int32)[owner]
    if "name" in eval:
        names = np.asarray([n.decode() if isinstance(n, bytes) else str(n) for n in eval["name"]], dtype=object)
        eval_windows["name"] = names[owner]
    return _limit(train_windows, train_limit), _limit(eval_windows, eval_limit)


#: Dataset name -> function making (train, eval) windows from its raw splits.
EXAMPLES = {"tiny_shakespeare": text_examples, "adfa_ld": trace_examples}


def make_examples(
    data: Mapping[str, Any], train: dict[str, np.ndarray], eval: dict[str, np.ndarray]  # noqa: A002
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Applies the dataset's window maker (`EXAMPLES[data["name"]]`, with the data settings), or nothing.

    Args:
      data: the run's data settings (name, seq_len, ...; unused keys are ignored).
      train, eval: raw splits as loaded by `jaxdl.data.sources.load_splits`.
    """
    maker = EXAMPLES.get(data["name"])
    if maker is None:
        return train, eval
    return maker(train, eval, **{k: v for k, v in data.items() if k != "name"})
