"""Objectives: one module per task, shared by every model that fits it."""

from jaxdl.tasks.base import Task
from jaxdl.tasks.vae import VAETask

TASKS: dict[str, type[Task]] = {
    "vae": VAETask,
}

__all__ = ["TASKS", "Task", "VAETask"]
