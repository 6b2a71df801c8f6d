"""The tasks the built-in trainers know (`base.TaskKind`), by `spec.task`."""

from __future__ import annotations

from kubeforge_trainers.tasks.base import TaskKind
from kubeforge_trainers.tasks.classification import Classification
from kubeforge_trainers.tasks.detection import Detection
from kubeforge_trainers.tasks.instance import InstanceSegmentation
from kubeforge_trainers.tasks.semantic import SemanticSegmentation

TASKS: dict[str, TaskKind] = {
    t.name: t for t in (Classification(), Detection(), InstanceSegmentation(), SemanticSegmentation())
}


def task_kind(task: str) -> TaskKind:
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"spec.task: the built-in trainers do not train {task!r} yet; they train "
                         f"{sorted(TASKS)}") from None


__all__ = ["TASKS", "TaskKind", "task_kind"]
