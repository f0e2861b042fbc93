"""FID of generator runs (GAN, VAE) and of the training set, on a jaxdl classifier's features.

    python -m scripts.fid --classifier CLS_RUN --run GAN_RUN --run VAE_RUN --train-vs-test \
        --num-samples 10000 --seed 0 --out fid.jsonl

Each score compares `--num-samples` images with the whole test split of the
classifier's dataset, on the classifier's penultimate-layer features
(`jaxdl.evaluators.fid`). This is not Inception-FID: numbers compare runs within
jaxdl, for the same classifier checkpoint, and nothing else.

  --run RUN_DIR   a finished GAN or VAE run on the same dataset; its latest
                  checkpoint (or `--step`) is restored. GAN: generator samples
                  in evaluation mode, mapped from [-1, 1] to [0, 1], from the
                  averaged generator where the run keeps one (`task.ema_decay`;
                  `--current-generator` for the current one). VAE: prior
                  samples z ~ N(0, I) decoded to Bernoulli means sigmoid(logits).
  --train-vs-test `--num-samples` training images drawn without replacement
                  (seed `--seed`) against the test split: the floor a perfect
                  generator would reach with this many samples.

Prints one line per score and appends one JSON record per score to `--out`
(what, run, checkpoint, classifier run, checkpoint and test accuracy, samples,
fid, seconds).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from jaxdl.data import sources
from jaxdl.evaluators import fid
from jaxdl.runs import load_classifier, load_manifest, load_settings, restore
from jaxdl.tasks.gan import GANTask
from jaxdl.tasks.vae import VAETask


def generated_images(
    run_dir: str, num: int, seed: int, step: int | None = None, averaged: bool = True
) -> tuple[np.ndarray, dict]:
    """`num` images float32 [N, H, W, C] in [0, 1] from a GAN or VAE run, and a description of the source.

    Raises:
      ValueError: the run's task is neither a GAN nor a VAE.
    """
    record = load_manifest(run_dir)
    settings = record["settings"]
    shape = tuple(record["built"]["data_spec"]["image_shape"])
    restored = restore(run_dir, {"image": np.zeros((1, *shape), np.uint8), "label": np.zeros((1,), np.int32)}, step=step)
    task, state = restored.task, restored.state
    if isinstance(task, GANTask):
        images = task.sample(state, num, seed=seed, averaged=averaged)
        which = "averaged" if averaged and state.g_ema is not None else "current"
        how = f"GAN samples of the {which} generator (evaluation mode), (x + 1) / 2"
    elif isinstance(task, VAETask):
        images = task.sample(state, num, seed=seed)
        how = "VAE prior samples z ~ N(0, I), Bernoulli means sigmoid(decoder logits)"
    else:
        raise ValueError(f"{run_dir} trained task {settings['task']['name']!r}; --run takes a GAN or VAE run.")
    source = {
        "run": str(run_dir),
        "model": settings["model"]["name"],
        "dataset": settings["data"]["name"],
        "checkpoint": restored.checkpoint,
        "samples": how,
    }
    return images.astype(np.float32), source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", required=True, help="folder of a finished classification run (the feature extractor)")
    parser.add_argument("--run", action="append", default=[], help="a GAN or VAE run folder (repeatable)")
    parser.add_argument("--train-vs-test", action="store_true", help="also score training images against the test split")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="noise of the samples, choice of training images")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of every --run (default: latest)")
    parser.add_argument(
        "--current-generator", action="store_true", help="GAN runs: sample the current generator, not the averaged one"
    )
    parser.add_argument("--out", default=None, help="append one JSON record per score to this file")
    args = parser.parse_args(argv)
    if not args.run and not args.train_vs_test:
        parser.error("nothing to score: give --run RUN_DIR and/or --train-vs-test")

    classifier = load_classifier(args.classifier)
    data = load_settings(args.classifier)["data"]
    builder = sources.prepare(data["name"], data_dir=data.get("data_dir"), manual_dir=data.get("manual_dir"))
    test = sources.load_arrays(builder, "test")
    test_features, test_logits = fid.features(classifier, test["image"])
    measured_accuracy = float(np.mean(np.argmax(test_logits, -1) == test["label"]))
    reference_stats = fid.gaussian_statistics(test_features)
    base = {
        "dataset": data["name"],
        "reference": f"{len(test['image'])} test images",
        "classifier_run": str(args.classifier),
        "classifier_checkpoint": classifier.checkpoint,
        "classifier_test_accuracy": measured_accuracy,
        "classifier_recorded_accuracy": classifier.test_accuracy,
        "feature_dim": int(test_features.shape[1]),
        "num_samples": args.num_samples,
        "seed": args.seed,
        "note": "FID on jaxdl classifier features, not Inception-FID; comparable only within jaxdl for this classifier",
    }
    print(
        f"classifier {args.classifier} ({classifier.checkpoint}): test accuracy {measured_accuracy:.4f} "
        f"on {data['name']}, {test_features.shape[1]} features"
    )

    jobs = [(run, None) for run in args.run] + ([("train-vs-test", "train")] if args.train_vs_test else [])
    records = []
    for what, split in jobs:
        start = time.perf_counter()
        if split == "train":
            train = sources.load_arrays(builder, "train")
            pick = np.random.default_rng(args.seed).choice(len(train["image"]), args.num_samples, replace=False)
            images = train["image"][np.sort(pick)].astype(np.float32) / 255.0
            source = {"run": None, "model": "training images", "dataset": data["name"], "checkpoint": None,
                      "samples": f"{args.num_samples} training images drawn without replacement (seed {args.seed})"}
        else:
            images, source = generated_images(
                what, args.num_samples, args.seed, args.step, averaged=not args.current_generator
            )
            if source["dataset"] != data["name"]:
                print(f"{what} trained on {source['dataset']} but the classifier on {data['name']}.", file=sys.stderr)
                return 2
        feats, _ = fid.features(classifier, images)
        score = fid.frechet_distance(*fid.gaussian_statistics(feats), *reference_stats)
        record = {**base, **source, "what": what, "fid": score, "seconds": time.perf_counter() - start}
        records.append(record)
        print(f"FID {score:10.3f}  {source['model']:<16} {what}")
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
