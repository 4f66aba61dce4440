"""The registry of ``meanfield reproduce``'s stages and what a stage renders: :class:`ReportSection`.

A stage names the points it needs (``tasks(config)``, a list of :class:`~meanfield.runs.reproduce.points.Job`)
and turns the computed values into sections of the report (``render(config, results, out)``). The five
built-in stages (width, ratio, learning_rate, rmt, digits) register themselves when their modules are imported.

Example:
    >>> ReportSection("A title", "A reading.").figures
    ()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ReportSection", "Stage", "STAGES", "register_stage"]


@dataclass(frozen=True)
class ReportSection:
    """One section of the report: a title, a table (Markdown), a computed reading, figures."""

    title: str
    reading: str
    table: str = ""
    figures: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """A step of reproduce: ``tasks(config)`` lists its points; ``render(config, results, out)`` -> report sections.

    ``available()`` returns None when the stage can run, else the reason it is skipped.
    """

    name: str
    tasks: Callable[[Any], list]  # config -> its jobs
    render: Callable[[Any, Any, Path], list[ReportSection]]  # config, results, folder
    available: Callable[[], str | None] = lambda: None


STAGES: dict[str, Stage] = {}


def register_stage(stage: Stage) -> Stage:
    """Add (or replace) a stage of ``reproduce``; list its name in ``Config.stages`` to run it.

    This is the hook for later figures: a module defines its tasks and its renderer and registers them
    here (as the modules of the five built-in stages do).
    """
    STAGES[stage.name] = stage
    return stage
