"""Objectives: one module per task, shared by every model that fits it."""

from jaxdl.tasks.airbench import AirbenchTask
from jaxdl.tasks.autoencoder import AutoencoderTask
from jaxdl.tasks.base import Task
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.tasks.gan import GANTask
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.tasks.trace_classification import TraceClassificationTask
from jaxdl.tasks.rbm import RBMTask
from jaxdl.tasks.regression import RegressionTask
from jaxdl.tasks.vae import VAETask

TASKS: dict[str, type[Task]] = {
    "vae": VAETask,
    "classification": ClassificationTask,
    "airbench": AirbenchTask,
    "regression": RegressionTask,
    "autoencoder": AutoencoderTask,
    "rbm": RBMTask,
    "language_model": LanguageModelTask,
    "trace_classification": TraceClassificationTask,
    "gan": GANTask,
}

__all__ = ["TASKS", "AirbenchTask", "AutoencoderTask", "ClassificationTask", "GANTask", "RBMTask", "RegressionTask", "LanguageModelTask", "Task", "TraceClassificationTask", "VAETask"]
