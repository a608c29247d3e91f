"""The in-memory form of one case's landmarks.

A :class:`Landmarks` maps landmark names to world points in **LPS millimetres**.
Each name is in one of three states:

present
    ``points[name]`` is a length-3 float array.
absent
    annotated as *not there* (a needle not inserted, a tooth missing):
    ``name in absent``. Trains towards an all-zero heatmap.
unknown
    not annotated: ``name in unknown``. Left out of the loss for that case.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnlandmark.errors import InvalidInput


class LandmarkFileError(InvalidInput):
    """A landmark file that cannot be read; the message names the file and the problem."""


@dataclass
class Landmarks:
    points: dict = field(default_factory=dict)
    absent: list = field(default_factory=list)
    unknown: list = field(default_factory=list)
    source: Path | None = None
    #: the names in the order a file listed them (set by the readers), so that a file read and
    #: written again keeps its order with absent points in place; not part of equality
    order: list = field(default_factory=list, compare=False, repr=False)
    #: names a file gave with two coordinates (x, y), read as z = 0: points of a 2D image
    #: (a 3D image refuses them); not part of equality
    planar: list = field(default_factory=list, compare=False, repr=False)

    @property
    def names(self) -> list:
        """Every name mentioned: in file order when read from a file, else present ones first."""
        mentioned = list(self.points) + [n for n in self.absent + self.unknown if n not in self.points]
        listed = [n for n in self.order if n in mentioned]
        return listed + [n for n in mentioned if n not in listed]

    def point(self, name: str) -> np.ndarray | None:
        """The LPS point of ``name``, or None when it is absent or unknown."""
        return self.points.get(name)

    def status(self, name: str) -> str:
        """'present', 'absent', 'unknown' or 'missing' (not mentioned at all)."""
        if name in self.points:
            return "present"
        if name in self.absent:
            return "absent"
        if name in self.unknown:
            return "unknown"
        return "missing"

    def as_array(self, names) -> np.ndarray:
        """(len(names), 3) LPS array in the given order; NaN rows for non-present names."""
        out = np.full((len(names), 3), np.nan)
        for i, name in enumerate(names):
            if name in self.points:
                out[i] = self.points[name]
        return out
