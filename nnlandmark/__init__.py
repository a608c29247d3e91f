"""nnlandmark: self-configuring 3D landmark detection on nnU-Net v2.

The pipeline, one function per step (the CLI ``nnlandmark <command>`` calls the same)::

    import nnlandmark as nl
    ds = nl.load_dataset("MyDataset")                    # validate only
    project = nl.prepare("MyDataset", "MyProject")       # nnU-Net plans + preprocessing
    model = nl.train("MyProject", fold=0, settings=nl.TrainingSettings(epochs=50))
    nl.predict("new_images/", "predictions/", model)      # world LPS mm, Slicer .mrk.json
    print(nl.evaluate("predictions/", "MyTestSet").format_table())
"""
import importlib

#: public name -> the module defining it. Imported on first use (PEP 562), so that
#: ``nnlandmark --help`` and argument errors answer without importing torch and nnunetv2.
_EXPORTS = {
    "DatasetError": "nnlandmark.data.dataset", "LandmarkDataset": "nnlandmark.data.dataset",
    "load_dataset": "nnlandmark.data.dataset", "Landmarks": "nnlandmark.data.landmarks",
    "read_landmarks": "nnlandmark.data.formats", "write_landmarks": "nnlandmark.data.formats",
    "make_synthetic_dataset": "nnlandmark.data.synthetic", "Project": "nnlandmark.planning.project",
    "prepare": "nnlandmark.planning.project", "TrainingSettings": "nnlandmark.training.presets",
    "predict": "nnlandmark.inference.predict", "plot_training_curves": "nnlandmark.report.curves",
    "export_model": "nnlandmark.model.folder", "import_model": "nnlandmark.model.folder",
    "resolve_model": "nnlandmark.model.folder", "evaluate": "nnlandmark.evaluation.evaluate",
    "evaluate_cv": "nnlandmark.evaluation.cross_validation", "qc_report": "nnlandmark.report.qc",
}
__all__ = sorted([*_EXPORTS, "train"])


def train(project_dir, fold=0, settings=None, **options):
    """:func:`nnlandmark.training.train.train` (see there), drawing each stage's
    ``training_curves.png`` after every epoch unless given another ``on_curves``: the training
    layer imports no report, so its plotter is passed down from here."""
    from nnlandmark.report.curves import plot_curves_beside
    from nnlandmark.training.train import train as train_folds
    options.setdefault("on_curves", plot_curves_beside)
    return train_folds(project_dir, fold, settings, **options)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'nnlandmark' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
