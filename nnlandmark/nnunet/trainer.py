"""The landmark trainer: a small subclass of nnU-Net's trainer.

nnU-Net keeps what it does well: data loading, foreground oversampling,
spatial and intensity augmentation, the planned network, SGD with poly decay,
checkpoints. We change only what landmarks need:

- the label map(s) of 3x3x3 cubes are turned *after augmentation* into one
  target heatmap per landmark, centred on the centroid of its (moved) cube;
- one output channel per landmark, no deep supervision, the preset's loss;
- landmarks that a case leaves unannotated are masked out of its loss;
- nnU-Net's mirroring along every axis is off; instead, when the settings
  ask for it (:meth:`TrainingSettings.mirroring`), half of the training
  patches are flipped along the patient's left-right axis and paired
  landmarks swap (the left eye of a mirrored head is its right eye). The
  left-right axis of the preprocessed array is read per case from its
  direction matrix and nnU-Net's ``transpose_forward``, never assumed. Like
  nnU-Net's own mirroring, the flip follows the spatial augmentation;
- validation reports the loss only; the best checkpoint is the one with the
  lowest validation loss; the latest checkpoint is written atomically every
  ``save_every`` epochs so a killed run resumes;
- a stage of the cascade (see :func:`nnlandmark.nnunet.planning.plan_cascade`)
  is a configuration of the plans: the global stage takes whole scans (no
  foreground oversampling), the local stage takes every patch around a
  randomly chosen landmark, shifted by a random offset (:class:`OffsetLoader`),
  so that the landmark is anywhere within the global stage's error of the
  patch centre, as it will be at prediction;
- with a time budget, the number of epochs is fitted to the wall clock after
  every epoch (the learning-rate schedule follows).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from functools import partial
from pathlib import Path
from time import time

import numpy as np
import torch
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from tqdm import tqdm

from nnlandmark.data.pairs import left_right_axis, swap_permutation
from nnlandmark.nnunet.networks import build_network
from nnlandmark.nnunet.planning import read_case_properties
from nnlandmark.training.intensity import random_intensity_remap
from nnlandmark.training.presets import TrainingSettings
from nnlandmark.training.targets import inside_patch, mirror_samples, points_from_label_patch


class StepDecay:
    """lr = initial * gamma ** (epoch // step); ``step(epoch)`` like nnU-Net's PolyLRScheduler."""

    def __init__(self, optimizer, initial_lr: float, step_epochs: int, gamma: float = 0.5):
        self.optimizer, self.initial_lr, self.step_epochs, self.gamma = optimizer, initial_lr, step_epochs, gamma

    def step(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.initial_lr * self.gamma ** (epoch // self.step_epochs)


class OffsetLoader(nnUNetDataLoader):
    """nnU-Net's data loader, every patch centred near a landmark: on a random
    voxel of a random landmark's cube (nnU-Net's foreground sampling), then
    shifted by a uniform random offset of up to ``max_offset`` voxels per axis."""

    def __init__(self, *args, max_offset=(0, 0, 0), **kwargs):
        super().__init__(*args, **kwargs)
        self.max_offset = np.asarray(max_offset, dtype=float)

    def get_bbox(self, data_shape, force_fg, class_locations, overwrite_class=None, verbose=False):
        lbs, ubs = super().get_bbox(data_shape, True, class_locations, overwrite_class, verbose)
        shift = np.rint(np.random.uniform(-self.max_offset, self.max_offset)).astype(int)
        return [lo + int(d) for lo, d in zip(lbs, shift)], [hi + int(d) for hi, d in zip(ubs, shift)]


class LandmarkTrainer(nnUNetTrainer):
    """Call :meth:`configure` right after construction (nnU-Net's ``__init__``
    records its own arguments by introspection, so ours cannot take more)."""

    def configure(self, settings: TrainingSettings, landmark_names: list, model_dir: Path,
                  unknown_landmarks: dict, pairs=(), stage: str = "fullres",
                  time_budget_s: float | None = None, output_folder: Path | None = None,
                  world_points: dict | None = None) -> None:
        """Apply ``settings``; write shared files into ``model_dir``, checkpoints into
        ``output_folder`` (default ``model_dir/fold_N``).

        ``unknown_landmarks`` maps case id -> names left unannotated in that
        case; ``pairs`` are the dataset's left/right pairs (mirroring swaps them);
        ``stage`` is ``fullres``, or ``global``/``local`` of the cascade (the
        trainer's configuration must be that stage's); ``time_budget_s`` fits
        the number of epochs to the wall clock; ``world_points`` (case id ->
        {name: world LPS point}) makes targets sub-voxel exact (see
        :meth:`subvoxel_offsets`).
        """
        self.settings = settings
        self.stage = stage
        self.time_budget_s = time_budget_s
        if stage == "global":
            self.oversample_foreground_percent = 0.0  # the patch holds the whole scan
        elif stage == "local":
            self.oversample_foreground_percent = 1.0  # every patch around a landmark
        self._max_offset = self.configuration_manager.configuration.get("nnlandmark_max_offset", [0, 0, 0])
        self._world_points = world_points or {}
        self._offsets = {}  # case id -> (L, 3) tensor, computed on first use
        self.landmark_names = list(landmark_names)
        self.num_epochs = settings.epochs
        self.num_iterations_per_epoch = settings.iterations_per_epoch
        self.num_val_iterations_per_epoch = settings.val_iterations
        self.save_every = settings.save_every
        self.initial_lr = settings.lr
        self.enable_deep_supervision = False
        self.loss_fn = settings.loss_function()
        self._unknown = {case: [self.landmark_names.index(n) for n in names]
                         for case, names in unknown_landmarks.items()}
        self.mirror = settings.mirroring(pairs)
        self._swap = swap_permutation(self.landmark_names, pairs)
        self._lr_axes = {}  # case id -> left-right axis of its preprocessed array, read on first use
        model_dir = Path(model_dir)
        self._relocate(model_dir, Path(output_folder) if output_folder else model_dir / f"fold_{self.fold}")

    def _relocate(self, model_dir: Path, output_folder: Path) -> None:
        # nnU-Net's __init__ already made <results>/<dataset>/<class>__<plans>__<config>/fold_N
        # and started a log there; move both into our model folder and drop the empty default.
        default_fold_folder = self.output_folder
        self.output_folder_base = str(model_dir)
        self.output_folder = str(output_folder)
        os.makedirs(self.output_folder, exist_ok=True)
        new_log = os.path.join(self.output_folder, os.path.basename(self.log_file))
        if os.path.exists(self.log_file) and os.path.abspath(self.log_file) != os.path.abspath(new_log):
            if os.path.exists(new_log):
                # logs are named by the second a trainer starts: a run resumed within the same
                # second as the one it continues must append to that log, not replace it
                with open(self.log_file) as header, open(new_log, "a") as log:
                    log.write(header.read())
                os.remove(self.log_file)
            else:
                shutil.move(self.log_file, new_log)
        self.log_file = new_log
        self.logger.output_folder = self.output_folder
        if os.path.abspath(default_fold_folder) != os.path.abspath(self.output_folder):
            try:
                os.removedirs(default_fold_folder)
            except OSError:
                pass  # not empty: something of the user's is there; leave it

    def print_to_log_file(self, *args, also_print_to_console=False, add_timestamp=True):
        # the log file keeps everything; the console shows our progress bar, not nnU-Net's chatter
        super().print_to_log_file(*args, also_print_to_console=False, add_timestamp=add_timestamp)

    # --- network and optimisation -------------------------------------------------
    def build_network_architecture(self, plans_manager, configuration_manager, num_input_channels,
                                   num_output_channels, enable_deep_supervision=False):
        # nnU-Net passes its label count (landmarks + background); we want one channel per landmark
        return build_network(self.settings.architecture, configuration_manager, num_input_channels,
                             len(self.landmark_names))

    def set_deep_supervision_enabled(self, enabled: bool):
        decoder = getattr(self.network, "decoder", None)
        if decoder is not None and hasattr(decoder, "deep_supervision"):
            decoder.deep_supervision = enabled

    def configure_optimizers(self):
        if self.settings.optimizer == "adam":
            optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
            if self.settings.schedule == "step":
                return optimizer, StepDecay(optimizer, self.initial_lr, max(1, self.num_epochs // 4))
            from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
            return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        return super().configure_optimizers()  # nnU-Net's SGD with poly decay

    def _set_num_epochs(self, n: int) -> None:
        """Change the schedule's length mid-run (time budget); the learning-rate decay follows."""
        self.num_epochs = int(n)
        if hasattr(self.lr_scheduler, "max_steps"):
            self.lr_scheduler.max_steps = max(1, self.num_epochs)
        elif isinstance(self.lr_scheduler, StepDecay):
            self.lr_scheduler.step_epochs = max(1, self.num_epochs // 4)

    def get_dataloaders(self):
        if self.stage != "local":
            return super().get_dataloaders()
        # nnU-Net builds its loaders by the module-level name; ours differs only in where patches are centred
        original = trainer_module.nnUNetDataLoader
        trainer_module.nnUNetDataLoader = partial(OffsetLoader, max_offset=self._max_offset)
        try:
            return super().get_dataloaders()
        finally:
            trainer_module.nnUNetDataLoader = original

    def _build_loss(self):
        return self.loss_fn

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None

    # --- one step -----------------------------------------------------------------
    def left_right_axis(self, case_id: str) -> int:
        """Spatial axis of the case's preprocessed array closest to the patient's left-right."""
        if case_id not in self._lr_axes:
            properties = read_case_properties(self.preprocessed_dataset_folder, case_id)
            direction = np.reshape(properties["sitk_stuff"]["direction"], (3, 3))
            self._lr_axes[case_id] = left_right_axis(direction, self.plans_manager.transpose_forward)
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
            from nnlandmark.geometry import world_to_preprocessed
            from nnlandmark.nnunet.planning import case_grids
            n = len(self.landmark_names)
            offsets = torch.zeros(n, 3)
            points = self._world_points.get(case_id, {})
            if points:
                if self.dataset_class is None:
                    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
                    self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
                _, seg, _, properties = self.dataset_class(self.preprocessed_dataset_folder,
                                                           identifiers=[case_id]).load_case(case_id)
                seg = torch.from_numpy(np.asarray(seg[:]).astype(np.int16))
                centroids = points_from_label_patch(seg[None], n)[0].double().numpy()
                pgrid, grid = case_grids(properties, self.plans_manager.transpose_forward, seg.shape[1:])
                for i, name in enumerate(self.landmark_names):
                    if name in points and np.all(np.isfinite(centroids[i])):
                        exact = world_to_preprocessed(np.asarray(points[name], float), pgrid, grid)
                        offsets[i] = torch.from_numpy(exact - centroids[i])
            self._offsets[case_id] = offsets
        return self._offsets[case_id]

    def _inputs(self, batch: dict, augment: bool = False):
        """Network input, heatmap targets and loss mask (B, L) of a batch.

        Absent landmarks have no cube, hence a NaN point and an all-zero
        target; unknown ones are masked out. With ``augment`` (training
        batches), each sample is mirrored left-right with probability 1/2
        when mirroring is on.
        """
        data = batch["data"].to(self.device, non_blocking=True)
        seg = batch["target"]
        seg = seg[0] if isinstance(seg, list) else seg
        seg = seg.to(self.device, non_blocking=True)
        points = points_from_label_patch(seg, len(self.landmark_names))
        if self._world_points:  # before mirroring, which flips the offsets with the points
            points = points + torch.stack([self.subvoxel_offsets(k) for k in batch["keys"]]).to(points)
        mask = torch.ones(points.shape[:2], dtype=torch.bool, device=self.device)
        for b, key in enumerate(batch["keys"]):
            mask[b, self._unknown.get(key, [])] = False
        if augment and self.mirror:
            flip = (torch.rand(len(batch["keys"])) < 0.5).tolist()
            axes = [self.left_right_axis(key) if f else 0 for key, f in zip(batch["keys"], flip)]
            data, points, mask = mirror_samples(data, points, mask, flip, axes, self._swap)
        if augment and self.settings.contrast_augmentation > 0:
            data = random_intensity_remap(data, self.settings.contrast_augmentation)
        if self.settings.output == "softmax":
            # a distribution over the patch's voxels cannot say "outside": such landmarks are not supervised
            mask &= inside_patch(points, seg.shape[2:])
        return data, self.settings.make_targets(points, seg.shape[2:]), mask

    def _loss(self, batch: dict, augment: bool = False) -> torch.Tensor:
        data, target, mask = self._inputs(batch, augment)
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else dummy_context()
        with autocast:
            output = self.network(data)
        return self.loss_fn(output.float(), target, channel_mask=mask)

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(batch, augment=True)
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        return {"loss": self._loss(batch).detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs):
        self.logger.log("val_losses", float(np.mean([o["loss"] for o in val_outputs])), self.current_epoch)

    # --- epochs, checkpoints, curves ---------------------------------------------
    def on_epoch_end(self):
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        train_loss = self.logger.get_value("train_losses", step=-1)
        val_loss = self.logger.get_value("val_losses", step=-1)
        seconds = self.logger.get_value("epoch_end_timestamps", step=-1) - \
            self.logger.get_value("epoch_start_timestamps", step=-1)
        self.print_to_log_file(f"train_loss {train_loss:.5f} val_loss {val_loss:.5f} epoch time {seconds:.1f} s",
                               also_print_to_console=False)
        # nnU-Net's checkpoint keeps one "best" number under the name _best_ema; for us it is the
        # lowest validation loss so far
        if self._best_ema is None or val_loss < self._best_ema:
            self._best_ema = val_loss
            self.print_to_log_file(f"new best validation loss {val_loss:.5f}", also_print_to_console=False)
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_best.pth"))
        if (self.current_epoch + 1) % self.save_every == 0:
            self.save_checkpoint(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        self._write_curves()
        self.current_epoch += 1

    def save_checkpoint(self, filename: str) -> None:
        tmp = os.path.join(os.path.dirname(filename), f".tmp_{os.path.basename(filename)}")
        super().save_checkpoint(tmp)
        if os.path.exists(tmp):
            os.replace(tmp, filename)

    def on_train_end(self):
        super().on_train_end()  # writes checkpoint_final.pth, then deletes checkpoint_latest.pth

    def _write_curves(self) -> None:
        log = self.logger.local_logger.my_fantastic_logging
        curves = {"train_loss": list(log["train_losses"]), "val_loss": list(log["val_losses"]),
                  "lr": list(log["lrs"])}
        n = min(len(v) for v in curves.values())
        curves = {k: [float(x) for x in v[:n]] for k, v in curves.items()}
        Path(self.output_folder, "training_curves.json").write_text(json.dumps(curves))
        try:
            from nnlandmark.report.curves import plot_training_curves
            plot_training_curves(curves, os.path.join(self.output_folder, "training_curves.png"))
        except ImportError:
            pass

    def _epoch_seconds(self) -> list:
        starts = self.logger.local_logger.my_fantastic_logging["epoch_start_timestamps"]
        ends = self.logger.local_logger.my_fantastic_logging["epoch_end_timestamps"]
        return [e - s for s, e in zip(starts, ends)]

    def _fit_to_budget(self) -> None:
        """Epochs that fit the time budget, from the mean epoch time so far (a resumed
        run counts the epochs it already trained)."""
        seconds = self._epoch_seconds()
        if self.time_budget_s is None or not seconds:
            return
        recent = float(np.mean(seconds[-5:]))
        left = self.time_budget_s - float(np.sum(seconds))
        fitted = self.current_epoch + math.floor(left / recent)
        self._set_num_epochs(min(self.settings.epochs, max(self.current_epoch, fitted)))

    def run_training(self, progress: bool = True):
        self.on_train_start()
        self._fit_to_budget()  # a resumed run
        its = self.num_iterations_per_epoch
        bar = tqdm(total=self.num_epochs * its, initial=self.current_epoch * its, disable=not progress,
                   desc=f"fold {self.fold} {self.stage}", unit="it", dynamic_ncols=True)
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            started = time()
            for i in range(its):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                bar.update()
                if self.time_budget_s is not None and not self._epoch_seconds():
                    # first epoch of a budgeted run: show the total it will come to, not 1000 epochs
                    per_iteration = (time() - started) / (i + 1)
                    epochs = self.time_budget_s / (per_iteration * (its + self.num_val_iterations_per_epoch))
                    bar.total = max(its, int(min(self.settings.epochs, epochs)) * its)
                    bar.refresh()
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
            self._fit_to_budget()
            bar.total = self.num_epochs * its
            bar.set_postfix(epoch=f"{self.current_epoch}/{self.num_epochs}",
                            train=f"{self.logger.get_value('train_losses', -1):.4f}",
                            val=f"{self.logger.get_value('val_losses', -1):.4f}")
        bar.close()
        self.on_train_end()
