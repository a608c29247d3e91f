"""From an augmented nnU-Net batch to what the network learns from.

nnU-Net's data loader and augmentation hand the trainer image patches and
label patches, in which landmark ``l`` is a small cube of label ``l + 1``
(:mod:`nnlandmark.nnunet.raw`), moved with the image. :class:`LandmarkBatches`
turns one such batch into the network input, one target per landmark and the
loss mask; the trainer (:class:`nnlandmark.nnunet.trainer.LandmarkTrainer`)
calls it for every batch as its recipe's ``prepare_batch``:

- each landmark's point is the centroid of its (moved) cube, corrected to the
  landmark's exact, sub-voxel position where it is known
  (:meth:`LandmarkBatches.subvoxel_offsets`);
- landmarks that a case leaves unannotated are masked out of its loss;
  absent ones have no cube, hence an all-zero target that counts (for the
  softmax preset only when it learns absence, ``settings.absence``; then a
  landmark outside the patch is an all-zero target too);
- when the settings ask for it (:meth:`TrainingSettings.mirroring`), half of
  the training patches are flipped along the patient's left-right axis and
  paired landmarks swap (the left eye of a mirrored head is its right eye).
  The left-right axis of the preprocessed array is read per case from its
  direction matrix and nnU-Net's ``transpose_forward``, never assumed. Like
  nnU-Net's own mirroring, the flip follows the spatial augmentation;
- optionally, intensities are remapped (``contrast_augmentation``);
- the preset renders the targets from the points, with the sigmas the stage
  learns when they are learned (``heatmap="adaptive"``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nnlandmark.data.pairs import left_right_axis, swap_permutation
from nnlandmark.geometry import world_to_preprocessed
from nnlandmark.nnunet.planning import case_direction, case_grids, load_preprocessed_case
from nnlandmark.training.intensity import random_intensity_remap
from nnlandmark.training.presets import TrainingSettings
from nnlandmark.training.targets import inside_patch, mirror_samples, points_from_label_patch


class LandmarkBatches:
    """``batches(data, seg, case_ids, augment)`` -> ``(network input, targets, loss mask (B, L))``.

    Parameters
    ----------
    settings : TrainingSettings
        Targets, mirroring and contrast augmentation.
    landmark_names : list of str
        The channel order.
    pairs : list of (str, str)
        The dataset's left/right pairs (mirroring swaps them).
    preprocessed_dir : path
        nnU-Net's preprocessed folder of the configuration being trained,
        where each case's direction matrix and label cubes are read.
    transpose_forward : sequence of 3 int
        The plans' ``transpose_forward``.
    unknown_landmarks : dict, optional
        Case id -> names left unannotated in that case (masked out of the loss).
    world_points : dict, optional
        Case id -> {name: world LPS point}; makes targets sub-voxel exact
        (see :meth:`subvoxel_offsets`).
    learned_sigmas : LearnedSigmas, optional
        The stage's learned sigmas (:meth:`TrainingSettings.learned_sigmas`):
        the targets are rendered with their current values, in their autograd
        graph, so the loss trains them.
    """

    def __init__(self, settings: TrainingSettings, landmark_names, pairs, preprocessed_dir, transpose_forward,
                 unknown_landmarks: dict | None = None, world_points: dict | None = None, learned_sigmas=None):
        self.settings = settings
        self.learned_sigmas = learned_sigmas
        self.landmark_names = list(landmark_names)
        self.mirror = settings.mirroring(pairs)
        self.swap = swap_permutation(self.landmark_names, pairs)
        self.preprocessed_dir = Path(preprocessed_dir)
        self.transpose_forward = transpose_forward
        self._unknown = {case: [self.landmark_names.index(n) for n in names]
                         for case, names in (unknown_landmarks or {}).items()}
        self._world_points = world_points or {}
        # per case, read on first use: a case comes back in many batches
        self._lr_axes = {}  # case id -> left-right axis of its preprocessed array
        self._offsets = {}  # case id -> (L, 3) tensor

    def left_right_axis(self, case_id: str) -> int:
        """Spatial axis of the case's preprocessed array closest to the patient's left-right."""
        if case_id not in self._lr_axes:
            direction = case_direction(self.preprocessed_dir, case_id)
            self._lr_axes[case_id] = left_right_axis(direction, self.transpose_forward)
        return self._lr_axes[case_id]

    def subvoxel_offsets(self, case_id: str) -> torch.Tensor:
        """``(L, 3)``: exact landmark point minus its label cube's centroid, in preprocessed voxels.

        A cube sits on the voxel nearest its landmark, and nnU-Net's resampling
        moves its centroid a little more: up to half a voxel per axis of label
        noise (0.75 mm on average at 1.5 mm, measured). The exact point is known
        (the world point through :mod:`nnlandmark.geometry`), so the difference is
        added to the centroid found in each augmented patch. It is exact for a
        patch that was only shifted, cropped, mirrored (applied after) or
        intensity-augmented, and approximate under rotation and scaling (the
        offset, at most about a voxel, is not rotated with the patch). Zero for
        landmarks without a world point.
        """
        if case_id not in self._offsets:
            n = len(self.landmark_names)
            offsets = torch.zeros(n, 3)
            points = self._world_points.get(case_id, {})
            if points:
                _, seg, properties = load_preprocessed_case(self.preprocessed_dir, case_id)
                seg = torch.from_numpy(np.asarray(seg[:]).astype(np.int16))
                centroids = points_from_label_patch(seg[None], n)[0].double().numpy()
                pgrid, grid = case_grids(properties, self.transpose_forward, seg.shape[1:])
                for i, name in enumerate(self.landmark_names):
                    if name in points and np.all(np.isfinite(centroids[i])):
                        exact = world_to_preprocessed(np.asarray(points[name], float), pgrid, grid)
                        offsets[i] = torch.from_numpy(exact - centroids[i])
            self._offsets[case_id] = offsets
        return self._offsets[case_id]

    def __call__(self, data: torch.Tensor, seg: torch.Tensor, case_ids, augment: bool = False):
        """Network input, heatmap targets and loss mask (B, L) of a batch.

        ``data`` (B, C, *patch) and ``seg`` (B, label maps, *patch) are on the
        training device. Absent landmarks have no cube, hence a NaN point and
        an all-zero target; unknown ones are masked out. With ``augment``
        (training batches), each sample is mirrored left-right with
        probability 1/2 when mirroring is on.
        """
        # 3 spatial axes, or 2 for 2D images ('2d' patches are the preprocessed array without its first,
        # one-slice axis: transposed first, see nnlandmark.nnunet.raw.PLANAR_SLICE_SPACING)
        dims = data.ndim - 2
        dropped = 3 - dims
        points = points_from_label_patch(seg, len(self.landmark_names), spatial_dims=dims)
        if self._world_points:  # before mirroring, which flips the offsets with the points
            offsets = torch.stack([self.subvoxel_offsets(k) for k in case_ids])[..., dropped:]
            points = points + offsets.to(points)
        mask = torch.ones(points.shape[:2], dtype=torch.bool, device=seg.device)
        for b, key in enumerate(case_ids):
            mask[b, self._unknown.get(key, [])] = False
        if augment and self.mirror:
            flip = (torch.rand(len(case_ids)) < 0.5).tolist()
            axes = [self.left_right_axis(key) - dropped if f else 0 for key, f in zip(case_ids, flip)]
            # a 2D image whose left-right axis runs across its one slice has nothing to mirror
            flip = [f and a >= 0 for f, a in zip(flip, axes)]
            axes = [max(a, 0) for a in axes]
            data, points, mask = mirror_samples(data, points, mask, flip, axes, self.swap)
        if augment and self.settings.contrast_augmentation > 0:
            data = random_intensity_remap(data, self.settings.contrast_augmentation)
        inside = inside_patch(points, seg.shape[2:])
        if self.settings.output == "softmax" and not self.settings.absence:
            # a distribution over the patch's voxels cannot say "outside": such landmarks are not supervised
            mask &= inside
        sigma = None if self.learned_sigmas is None else self.learned_sigmas()
        targets = self.settings.make_targets(points, seg.shape[2:], sigma=sigma)
        if self.settings.output == "softmax" and self.settings.absence:
            # with an "absent" slot, a landmark outside the patch (or absent: NaN) is a target of all
            # zeros, which the loss reads as "not here"; a point just outside would leave a Gaussian tail
            targets = targets * inside[(..., *([None] * dims))].to(targets.dtype)
        return data, targets, mask
