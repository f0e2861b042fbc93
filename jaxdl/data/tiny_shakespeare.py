"""TFDS builder for tiny Shakespeare (Karpathy's char-rnn corpus) that needs no TensorFlow.

The raw file is `input.txt` (1,115,394 bytes, 40,000 lines, 65 distinct ASCII
characters) from karpathy/char-rnn `data/tinyshakespeare/`, the text nanoGPT's
`shakespeare_char` recipe trains on. TFDS's stock `tiny_shakespeare` builder
splits it differently (and prepares through TensorFlow); this one follows
nanoGPT's `data/shakespeare_char/prepare.py`: the first 90% of the characters
(`int(n * 0.9)` = 1,003,854) are `train`, the remaining 111,540 `validation`.

Raw file: from `manual_dir` (or its `tinyshakespeare/` subfolder) or
downloaded, and checked against its size and sha256 before anything is written.

Features: one record per split, `text` uint8 [N] (the split's bytes, which are
its characters: the file is ASCII). Tokenisation into characters and windows
lives in `jaxdl.data.sequences`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxdl.data.raw_files import RawFile, RawFileError, fetch_raw_files

#: The 65 distinct characters of input.txt in sorted order: nanoGPT's vocabulary (token id = position).
VOCABULARY = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

TRAIN_FRACTION = 0.9  # nanoGPT: train = data[:int(n * 0.9)], validation = the rest

_CITATION = """@misc{karpathy2015charrnn,
  author={Karpathy, Andrej}, title={char-rnn: Multi-layer Recurrent Neural Networks for character-level language models},
  year={2015}, howpublished={\\url{https://github.com/karpathy/char-rnn}}}"""


class TinyShakespeareText(tfds.core.GeneratorBasedBuilder):
    """Tiny Shakespeare as raw bytes, split 90/10 as nanoGPT's shakespeare_char."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "input.txt split 90% / 10% into train / validation, without TensorFlow."}
    URL_PREFIX = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
    FILE = RawFile("input.txt", 1_115_394, "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed")
    RAW_FILES = (FILE,)
    SUBDIRS = ("tinyshakespeare", "tiny_shakespeare")
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional: place karpathy/char-rnn's data/tinyshakespeare/input.txt in manual_dir "
        "(or manual_dir/tinyshakespeare) to prepare offline."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Tiny Shakespeare (40,000 lines), first 90% train and last 10% validation, as bytes.",
            features=tfds.features.FeaturesDict({"text": tfds.features.Tensor(shape=(None,), dtype=np.uint8)}),
            disable_shuffling=True,
            homepage="https://github.com/karpathy/char-rnn",
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        paths = fetch_raw_files(
            dl_manager, files=(self.FILE,), url_prefix=self.URL_PREFIX, subdirs=self.SUBDIRS, dataset=self.name
        )
        data = np.frombuffer(paths[self.FILE.name].read_bytes(), dtype=np.uint8)
        unknown = sorted(set(data.tobytes().decode("ascii", errors="replace")) - set(VOCABULARY))
        if unknown:
            raise RawFileError(f"{paths[self.FILE.name]} holds characters {unknown} outside the 65-character vocabulary.")
        n_train = int(len(data) * TRAIN_FRACTION)
        return {
            "train": self._generate_examples(data[:n_train]),
            "validation": self._generate_examples(data[n_train:]),
        }

    def _generate_examples(self, text: np.ndarray) -> Iterator[tuple[int, dict]]:
        yield 0, {"text": text}
