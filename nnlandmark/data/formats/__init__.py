"""Reading and writing landmark files; every reader returns LPS millimetres.

=================  ===========================================  ======================
suffix             format                                       coordinate system
=================  ===========================================  ======================
``.json``          ours (``docs/dataset_layout.md``), or the    ``coordinate_system``
                   predictor's output, or Slicer markups;       field (default LPS);
                   recognised by content                        predictions are LPS
``.mrk.json``      3D Slicer markups                            per markup
                                                                ``coordinateSystem``
                                                                (default LPS)
``.fcsv``          3D Slicer fiducial CSV                       ``# CoordinateSystem``
                                                                (default RAS)
``.csv``           one case: ``name,x,y,z[,status]``            ``coordinate_system``
                                                                column or comment
                                                                (default LPS)
=================  ===========================================  ======================

Examples
--------
>>> import tempfile, pathlib, numpy as np
>>> from nnlandmark.data.landmarks import Landmarks
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> lm = Landmarks(points={"nasion": np.array([1.0, 2.0, 3.0])}, unknown=["inion"])
>>> write_landmarks(lm, folder / "case.fcsv", coordinate_system="RAS")
>>> read_landmarks(folder / "case.fcsv").point("nasion")
array([1., 2., 3.])
"""
from __future__ import annotations

from pathlib import Path

from nnlandmark.data.landmarks import LandmarkFileError, Landmarks
from nnlandmark.data.formats.json_formats import (
    MARKUPS_SCHEMA, read_json_landmarks, read_markups_control_points, read_markups_json,
    write_json_landmarks, write_markups_json, write_prediction_json,
)
from nnlandmark.data.formats.label_map import read_landmarks_from_label_map, write_label_map
from nnlandmark.data.formats.text_formats import (
    read_csv_landmarks, read_fcsv, read_landmark_table, write_csv_landmarks, write_fcsv,
    write_landmark_table,
)
from nnlandmark.errors import InvalidInput

__all__ = [
    "LANDMARK_SUFFIXES", "MARKUPS_SCHEMA", "LandmarkFileError", "landmark_suffix", "read_landmarks",
    "write_landmarks", "read_landmark_table", "write_landmark_table", "read_landmarks_from_label_map",
    "write_label_map", "write_prediction_json", "read_markups_control_points",
]

#: Landmark file suffixes, longest first so that ``.mrk.json`` wins over ``.json``.
LANDMARK_SUFFIXES = (".mrk.json", ".json", ".fcsv", ".csv")

_READERS = {".mrk.json": read_markups_json, ".json": read_json_landmarks,
            ".fcsv": read_fcsv, ".csv": read_csv_landmarks}
_WRITERS = {".mrk.json": write_markups_json, ".json": write_json_landmarks,
            ".fcsv": write_fcsv, ".csv": write_csv_landmarks}


def landmark_suffix(path) -> str | None:
    """The landmark-file suffix of ``path`` (case-insensitive), or None.

    Examples
    --------
    >>> landmark_suffix("sub-01_afids.MRK.JSON")
    '.mrk.json'
    >>> landmark_suffix("image.nii.gz") is None
    True
    """
    name = Path(path).name.lower()
    return next((s for s in LANDMARK_SUFFIXES if name.endswith(s)), None)


def read_landmarks(path) -> Landmarks:
    """Read one case's landmarks from any supported file, as LPS millimetres.

    Raises
    ------
    LandmarkFileError
        Missing or malformed file; the message names the file and the problem.
    """
    path = Path(path)
    suffix = landmark_suffix(path)
    if suffix is None:
        raise LandmarkFileError(f"{path}: unsupported landmark file suffix; expected one of "
                                f"{', '.join(LANDMARK_SUFFIXES)}")
    if not path.is_file():
        raise LandmarkFileError(f"{path}: no such file")
    landmarks = _READERS[suffix](path)
    landmarks.source = path
    return landmarks


def write_landmarks(landmarks: Landmarks, path, coordinate_system: str = "LPS", names=None) -> None:
    """Write one case's landmarks in the format given by the suffix of ``path``.

    Parameters
    ----------
    landmarks : Landmarks
        Points in LPS millimetres.
    path : path-like
        ``.json`` (ours), ``.mrk.json``, ``.fcsv`` or ``.csv``.
    coordinate_system : {"LPS", "RAS"}
        System the coordinates are written in; the file declares it.
    names : list of str, optional
        Order of the written landmarks (e.g. the dataset's landmark list, so
        that Slicer control point *i* is landmark *i*); names not mentioned in
        ``landmarks`` are written as unknown. Default ``landmarks.names``
        (present landmarks first).

    Notes
    -----
    ``.mrk.json`` and ``.fcsv`` write absent and unknown landmarks in place as
    Slicer "missing" control points (read back as unknown). ``.json`` and
    ``.csv`` keep all three states.
    """
    suffix = landmark_suffix(path)
    if suffix is None:
        raise InvalidInput(f"{path}: unsupported landmark file suffix; expected one of "
                         f"{', '.join(LANDMARK_SUFFIXES)}")
    _WRITERS[suffix](landmarks, Path(path), coordinate_system, names=names)
