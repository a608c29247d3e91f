"""The cascade's local stage shares one patch between landmarks close together (issue 22, item 5).

The network is replaced by what a perfect, translation-equivariant local network would output (the
input patch's own channels: landmark l's channel holds a blob at landmark l), so the test sees only
the plumbing: which patch a landmark is read from, and how its point gets back to the world.
"""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnlandmark.geometry import ImageGrid, PreprocessedGrid, preprocessed_to_world
from nnlandmark.inference.predict import _refine_locally


class EquivariantStage:
    """A local stage whose 'network' returns its input patches, and counts the patches it saw."""

    def __init__(self, data, pgrid, patch_size, max_offset):
        self.data, self.pgrid, self.patches_seen = data, pgrid, 0
        self.configuration_manager = SimpleNamespace(patch_size=patch_size,
                                                     configuration={"nnlandmark_max_offset": max_offset})

    def preprocess(self, files, read=None):
        return self.data.clone(), self.pgrid

    def patch_logits(self, patches, mirror_axis=None):
        self.patches_seen += len(patches)
        return patches.float()


def _blobs(shape, points, sigma=1.5):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    maps = [np.exp(-((grid - p) ** 2).sum(-1) / (2 * sigma ** 2)) for p in points]
    return torch.as_tensor(np.stack(maps)) * 20.0  # logits: a sharp softmax peak at each point


@pytest.mark.parametrize("dims", [3, 2])
def test_shared_patches_give_the_points_separate_patches_give(dims):
    rng = np.random.default_rng(0)
    shape = (40, 48, 44) if dims == 3 else (1, 80, 90)
    spatial = slice(3 - dims, 3)
    # two landmarks 2 voxels apart, a third close to them, one far away
    points = np.array([[20.3, 24.1, 20.6], [21.2, 25.9, 21.4], [18.4, 22.7, 23.1], [8.6, 10.2, 34.7]])
    if dims == 2:
        points = np.c_[np.zeros(4), points[:, :2] * 1.6]
    data = _blobs(shape, points)
    pgrid = PreprocessedGrid((0, 1, 2), (0, 0, 0), shape, shape)
    grid = ImageGrid(size=shape[::-1], spacing=(0.8, 0.8, 0.8), origin=(3.0, -2.0, 1.0),
                     direction=np.eye(3))
    # global estimates one voxel off the truth, as a trained global stage leaves them
    estimates = preprocessed_to_world(points + np.r_[[0.0] * (3 - dims), rng.uniform(-1, 1, dims)], pgrid, grid)
    patch = (16,) * dims
    offsets = [0.0] * (3 - dims) + [6.0] * dims

    def refine(share):
        stage = EquivariantStage(data, pgrid, patch, offsets)
        world, _, _ = _refine_locally([], grid, estimates, stage, "argmax", "softmax", mirror=False, share=share)
        return world, stage.patches_seen

    alone, n_alone = refine(0.0)
    shared, n_shared = refine(0.5)
    assert n_alone == 4 and n_shared == 2  # the three close landmarks share one patch
    assert np.abs(shared - alone).max() <= 0.01  # mm
    truth = preprocessed_to_world(np.rint(points), pgrid, grid)  # argmax: the blob's peak voxel
    assert np.abs(shared - truth).max() <= 1e-6
