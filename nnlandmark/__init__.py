"""nnlandmark: self-configuring 3D landmark detection on nnU-Net v2.

The pipeline, one function per step (the CLI ``nnlandmark <command>`` calls the same)::

    import nnlandmark as nl
    ds = nl.load_dataset("MyDataset")                    # validate only
    project = nl.prepare("MyDataset", "MyProject")       # nnU-Net plans + preprocessing
    model = nl.train("MyProject", fold=0, settings=nl.TrainingSettings(epochs=50))
    nl.predict("new_images/", "predictions/", model)      # world LPS mm, Slicer .mrk.json
    print(nl.evaluate("predictions/", "MyTestSet").format_table())
"""
from nnlandmark.data.dataset import DatasetError, LandmarkDataset, load_dataset
from nnlandmark.data.landmarks import Landmarks
from nnlandmark.data.formats import read_landmarks, write_landmarks
from nnlandmark.data.synthetic import make_synthetic_dataset
from nnlandmark.planning.project import Project, prepare
from nnlandmark.training.presets import TrainingSettings
from nnlandmark.training.train import train
from nnlandmark.inference.predict import predict
from nnlandmark.inference.model_folder import export_model, import_model, resolve_model
from nnlandmark.evaluation.evaluate import evaluate
from nnlandmark.evaluation.cross_validation import evaluate_cv
from nnlandmark.report.qc import qc_report

__all__ = ["DatasetError", "LandmarkDataset", "Landmarks", "Project", "TrainingSettings", "evaluate",
           "evaluate_cv", "export_model", "import_model", "load_dataset", "make_synthetic_dataset", "predict",
           "prepare", "qc_report", "read_landmarks", "resolve_model", "train", "write_landmarks"]
