"""Objectives: one module per task, shared by every model that fits it."""

from jaxdl.tasks.autoencoder import AutoencoderTask
from jaxdl.tasks.base import Task
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.tasks.trace_classification import TraceClassificationTask
from jaxdl.tasks.rbm import RBMTask
from jaxdl.tasks.regression import RegressionTask
from jaxdl.tasks.vae import VAETask

TASKS: dict[str, type[Task]] = {
    "vae": VAETask,
    "classification": ClassificationTask,
    "regression": RegressionTask,
    "autoencoder": AutoencoderTask,
    "rbm": RBMTask,
    "language_model": LanguageModelTask,
    "trace_classification": TraceClassificationTask,
}

__all__ = ["TASKS", "AutoencoderTask", "ClassificationTask", "RBMTask", "RegressionTask", "LanguageModelTask", "Task", "TraceClassificationTask", "VAETask"]
