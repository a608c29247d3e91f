"""The 3D Slicer half of ``run.py``: runs in a Python that has the ``slicer-core`` wheel.

Reads a job list (JSON) and answers with what Slicer's own MRML storage nodes
did, as JSON on stdout. Nothing from nnlandmark is imported here.

Jobs::

    {"op": "read", "path": "case.mrk.json"}
        -> {"ok": true, "points": [{"label": ..., "status": "defined", "ras": [x, y, z]}, ...]}
    {"op": "write", "path": "out.fcsv", "system": "LPS",
     "points": [{"label": ..., "ras": [x, y, z] or null}, ...]}
        -> {"ok": true}   (a null position is written as a missing control point)
    {"op": "reread", "path": "ours.mrk.json", "out": "slicer.fcsv", "system": "RAS"}
        -> Slicer reads ``path`` and saves the node again to ``out``.

``.mrk.json`` goes through ``vtkMRMLMarkupsJsonStorageNode``, ``.fcsv``
through ``vtkMRMLMarkupsFiducialStorageNode``, both on a
``vtkMRMLMarkupsFiducialNode`` in a bare ``vtkMRMLScene``.
"""
import json
import sys
import time

t0 = time.perf_counter()
import slicer  # noqa: E402  (slicer-core)
IMPORT_S = time.perf_counter() - t0

STATUS = {slicer.vtkMRMLMarkupsNode.PositionUndefined: "undefined",
          slicer.vtkMRMLMarkupsNode.PositionPreview: "preview",
          slicer.vtkMRMLMarkupsNode.PositionDefined: "defined",
          slicer.vtkMRMLMarkupsNode.PositionMissing: "missing"}
SYSTEM = {"LPS": slicer.vtkMRMLStorageNode.CoordinateSystemLPS,
          "RAS": slicer.vtkMRMLStorageNode.CoordinateSystemRAS}


def _storage(scene, path):
    if path.endswith(".fcsv"):
        node = slicer.vtkMRMLMarkupsFiducialStorageNode()
    elif path.endswith(".mrk.json"):
        node = slicer.vtkMRMLMarkupsJsonStorageNode()
    else:
        raise ValueError(f"{path}: not a markups file")
    scene.AddNode(node)
    node.SetFileName(path)
    return node


def _new_point_list(scene):
    node = slicer.vtkMRMLMarkupsFiducialNode()
    scene.AddNode(node)
    return node


def _points(node):
    out = []
    for i in range(node.GetNumberOfControlPoints()):
        ras = [0.0, 0.0, 0.0]
        node.GetNthControlPointPosition(i, ras)
        out.append({"label": node.GetNthControlPointLabel(i),
                    "status": STATUS.get(node.GetNthControlPointPositionStatus(i), "?"),
                    "ras": ras})
    return out


def _read(scene, path):
    node = _new_point_list(scene)
    ok = _storage(scene, path).ReadData(node)
    return node, bool(ok)


def _save(scene, node, path, system):
    storage = _storage(scene, path)
    storage.SetCoordinateSystem(SYSTEM[system])
    return bool(storage.WriteData(node))


def run(job):
    scene = slicer.vtkMRMLScene()
    if job["op"] == "read":
        node, ok = _read(scene, job["path"])
        return {"ok": ok, "points": _points(node)}
    if job["op"] == "write":
        node = _new_point_list(scene)
        for p in job["points"]:
            i = node.AddControlPoint(p["ras"] or [0.0, 0.0, 0.0], p["label"])
            if p["ras"] is None:
                node.SetNthControlPointPositionMissing(i)
        return {"ok": _save(scene, node, job["path"], job["system"])}
    if job["op"] == "reread":
        node, ok = _read(scene, job["path"])
        return {"ok": ok and _save(scene, node, job["out"], job["system"])}
    raise ValueError(f"unknown op {job['op']!r}")


def main():
    jobs = json.load(open(sys.argv[1]))
    results = []
    for job in jobs:
        try:
            results.append(run(job))
        except Exception as err:  # report, let run.py print the FAIL line
            results.append({"ok": False, "error": f"{type(err).__name__}: {err}"})
    try:
        from importlib.metadata import version
        slicer_version = version("slicer-core")
    except Exception:
        slicer_version = None
    json.dump({"slicer_version": slicer_version, "import_s": IMPORT_S,
               "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
