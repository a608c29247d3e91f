"""A two-channel dataset end to end: prepare, train (the default cascade, a tiny schedule),
predict from ``<case>_0000``/``<case>_0001`` files.

The second channel is the first with its intensities inverted, so that the channels differ
and each one alone locates the landmarks. Five small phantoms (32^3 voxels of 3 mm).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

CHANNELS = ["MR", "inverted"]


def _two_channel_dataset(src: Path, dst: Path) -> Path:
    """``src`` (one channel) as a dataset with channels ``CHANNELS``: the image, then its negative."""
    (dst / "images").mkdir(parents=True)
    shutil.copytree(src / "landmarks", dst / "landmarks")
    spec = json.loads((src / "dataset.json").read_text())
    (dst / "dataset.json").write_text(json.dumps({**spec, "channels": CHANNELS}))
    for f in sorted((src / "images").iterdir()):
        case = f.name[:-len(".nii.gz")]
        image = sitk.ReadImage(str(f))
        inverted = sitk.GetImageFromArray(-sitk.GetArrayFromImage(image))
        inverted.CopyInformation(image)
        sitk.WriteImage(image, str(dst / "images" / f"{case}_0000.nii.gz"))
        sitk.WriteImage(inverted, str(dst / "images" / f"{case}_0001.nii.gz"))
    return dst


@pytest.fixture(scope="module")
def two_channel_model(tmp_path_factory):
    from nnlandmark.data.synthetic import make_synthetic_dataset
    from nnlandmark.planning.project import prepare
    from nnlandmark.training.presets import TrainingSettings
    from nnlandmark.training.train import train
    root = tmp_path_factory.mktemp("multichannel")
    one = make_synthetic_dataset(root / "one_channel", n_cases=5, seed=2, shape=(32, 32, 32),
                                 spacing=(3.0, 3.0, 3.0))
    data = _two_channel_dataset(one, root / "data")
    project = prepare(data, root / "project", num_processes=1, progress=False)
    model = train(project.root, 0, TrainingSettings(epochs=2, iterations_per_epoch=2, val_iterations=1), device="cpu", progress=False)
    return SimpleNamespace(root=root, data=data, project=project, model=model)


def test_two_channels_are_exported_trained_on_and_predicted_from(two_channel_model, tmp_path):
    from nnlandmark.inference.predict import predict
    from nnlandmark.nnunet.planning import preprocessed_folder
    m = two_channel_model
    # exported for nnU-Net as two channels, preprocessed as two
    raw = m.project.raw_dir()
    assert json.loads((raw / "dataset.json").read_text())["channel_names"] == {"0": "MR", "1": "inverted"}
    assert sorted(p.name for p in (raw / "imagesTr").glob("case_000_*")) == ["case_000_0000.mha",
                                                                             "case_000_0001.mha"]
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    folder = preprocessed_folder(m.project.folders, m.project.dataset_name, m.project.plans())
    data, _, _, _ = infer_dataset_class(str(folder))(str(folder)).load_case("case_000")
    data = np.asarray(data)
    assert data.shape[0] == 2
    # in order (the image first: at the planned 3 mm, uncropped, it is the voxels as read) and each
    # normalised on its own by nnU-Net, so that the negative image normalises to the negative
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(m.data / "images" / "case_000_0000.nii.gz")))
    assert data.shape[1:] == image.shape
    assert np.corrcoef(data[0].ravel(), image.ravel())[0, 1] > 0.999
    np.testing.assert_allclose(data[1], -data[0], atol=1e-3)

    # the model knows its channels; every stage's network takes two input channels
    description = json.loads((m.model / "nnlandmark.json").read_text())
    assert description["channels"] == CHANNELS
    for stage in ("global", "local"):
        weights = torch.load(m.model / "fold_0" / stage / "checkpoint_final.pth", map_location="cpu",
                             weights_only=False)["network_weights"]
        first_conv = next(w for w in weights.values() if w.ndim == 5)
        assert first_conv.shape[1] == 2, stage

    # prediction preprocesses the two files as prepare did, in the same order
    from nnlandmark.model.folder import ModelFolder
    files = [m.data / "images" / f"case_000_{c:04d}.nii.gz" for c in range(2)]
    x, _ = ModelFolder(m.model).predictor([0], "local").preprocess(files)  # full resolution, as prepared
    np.testing.assert_allclose(np.asarray(x), data, atol=1e-4)

    # prediction finds <case>_0000 and <case>_0001 in a folder and reads both
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for f in files:
        shutil.copy(f, inputs / f.name)
    out = predict(inputs, tmp_path / "pred", m.model, progress=False)
    assert sorted(p.name for p in out.glob("case_*")) == ["case_000.json", "case_000.mrk.json"]
    record = json.loads((out / "case_000.json").read_text())
    assert list(record) == description["landmarks"]
    assert all(np.isfinite(r["world_lps_mm"]).all() for r in record.values())
    same = predict({"case_000": files}, tmp_path / "pred_dict", m.model, progress=False)
    assert json.loads((same / "case_000.json").read_text()) == record

    # the second channel counts: replacing it (the first unchanged) changes the prediction
    # (noise, not zeros: an image with no signal is refused)
    second = sitk.ReadImage(str(files[1]))
    noise = sitk.GetImageFromArray(np.random.default_rng(0).random(second.GetSize()[::-1]).astype(np.float32))
    noise.CopyInformation(second)
    sitk.WriteImage(noise, str(tmp_path / "blank_0001.nii.gz"))
    changed = predict({"case_000": [files[0], tmp_path / "blank_0001.nii.gz"]}, tmp_path / "pred_blank", m.model,
                      progress=False)
    other = json.loads((changed / "case_000.json").read_text())
    assert any(other[n]["score"] != record[n]["score"] or other[n]["world_lps_mm"] != record[n]["world_lps_mm"]
               for n in record)
