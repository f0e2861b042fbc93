"""What every peer builder shares: the unavailability error and the image scaling jaxdl's steps apply."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


class NotAvailable(RuntimeError):
    """A peer that cannot run here (package missing, or no such architecture in that framework)."""


def images(batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """float32 [B, H, W, C] in [0, 1] from uint8 images (as jaxdl scales them inside its step); floats pass as they are."""
    x = np.asarray(batch["image"])
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
