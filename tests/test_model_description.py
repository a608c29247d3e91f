"""nnlandmark.json as one typed object (nnlandmark/model/description.py), old files included."""
import json
from pathlib import Path

import pytest

from nnlandmark.model.description import LEGACY_PRESETS, ModelDescription, fold_key
from nnlandmark.model.folder import MODEL_FILE, ModelFolder, ModelFolderError

#: written by the code of 2026-12-03 (``nnlandmark demo --epochs 2 --iterations 3``, then ``evaluate-cv``),
#: before ``output`` was stored: the cascade's two stages, a shape prior, presence and radius calibration
TODAYS_FILE = Path(__file__).parent / "fixtures" / "nnlandmark_2026-12-03.json"


def test_a_description_written_before_the_type_loads_and_keeps_every_field(tmp_path):
    old = json.loads(TODAYS_FILE.read_text())
    assert "output" not in old
    (tmp_path / MODEL_FILE).write_text(TODAYS_FILE.read_text())
    model = ModelFolder(tmp_path)
    d = model.description
    assert d.landmarks == old["landmarks"] and d.stages == {"global": "3d_global", "local": "3d_local"}
    assert d.output == "softmax" and d.heatmap == "gaussian" and d.mirror is True and d.orientation == "LPS"
    assert d.shape_prior_of([1, 0]) == old["shape_prior"]["fold_0"] and d.shape_prior_of([1]) is None
    assert d.uncertainty_calibration["decoder"] == "mass" and d.presence_thresholds == {}
    # nothing lost, nothing renamed; what it adds is the rule it read, and an empty entry
    assert d.to_dict() == {**old, "output": "softmax", "learned_sigmas": {}}
    model.update({"presence_thresholds": {"vertex": 0.25}})  # a write migrates the file
    again = json.loads((tmp_path / MODEL_FILE).read_text())
    assert again["output"] == "softmax" and again["presence_thresholds"] == {"vertex": 0.25}
    assert again["shape_prior"] == old["shape_prior"]


@pytest.mark.parametrize("preset, output, heatmap, sigma", [("cone", "sigmoid", "cone", 4.0),
                                                             ("v1", "sigmoid", "gaussian", 4.0),
                                                             (None, "softmax", "gaussian", 1.5)])
def test_descriptions_from_before_the_cascade_and_the_stored_rule(preset, output, heatmap, sigma):
    settings = {"architecture": "unet"} if preset is None else {"preset": preset, "architecture": "unet"}
    d = ModelDescription.from_dict({"landmarks": ["a"], "configuration": "3d_fullres", "settings": settings})
    assert (d.stages, d.output, d.heatmap, d.settings["gaussian_sigma"]) == ({"fullres": "3d_fullres"}, output,
                                                                             heatmap, sigma)


def test_the_frozen_legacy_rules_are_what_the_presets_say():
    """The table that reads old files must not contradict training's presets for the presets it knows."""
    from nnlandmark.training.presets import PRESETS
    for name, legacy in LEGACY_PRESETS.items():
        assert (PRESETS[name]["output"], PRESETS[name]["heatmap"], PRESETS[name]["sigma"]) == \
            (legacy["output"], legacy["heatmap"], legacy["sigma"])


@pytest.mark.parametrize("bad", [[], {"landmarks": "a", "configuration": "3d_fullres"},
                                 {"landmarks": ["a"]},
                                 {"landmarks": ["a"], "configuration": "3d_fullres", "output": "softplus"},
                                 {"landmarks": ["a"], "configuration": "3d_fullres", "settings": {"preset": "new"}}])
def test_what_is_not_a_description_is_refused_naming_the_file(tmp_path, bad):
    (tmp_path / MODEL_FILE).write_text(json.dumps(bad))
    with pytest.raises(ModelFolderError, match=MODEL_FILE):
        ModelFolder(tmp_path).description


def test_fields_of_a_newer_version_are_kept():
    d = ModelDescription.from_dict({"landmarks": ["a"], "configuration": "2d", "output": "sigmoid",
                                    "fold_finished": {"fold_0": True}})
    assert d.to_dict()["fold_finished"] == {"fold_0": True} and d.extra == {"fold_finished": {"fold_0": True}}
    assert fold_key(0) in d["fold_finished"]
