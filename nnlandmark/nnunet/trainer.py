"""The landmark trainer: a small subclass of nnU-Net's trainer.

nnU-Net keeps what it does well: data loading, foreground oversampling,
spatial and intensity augmentation, the planned network, SGD with poly decay,
checkpoints. We change only what landmarks need:

- each augmented batch (image patches, label patches with the landmarks'
  cubes) goes through the recipe's ``prepare_batch``, which returns the
  network input, one target heatmap per landmark and the loss mask. What
  happens there (cube centroids, unannotated landmarks, left-right mirroring
  with paired landmarks swapped, targets) is the training layer's business
  (:class:`nnlandmark.training.batches.LandmarkBatches`); this module only
  knows nnU-Net's batch format;
- one output channel per landmark, no deep supervision, the recipe's loss;
- nnU-Net's mirroring along every axis is off (mirroring, where wanted, is
  done in ``prepare_batch``, after nnU-Net's spatial augmentation);
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
from collections.abc import Callable
from dataclasses import dataclass
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

from nnlandmark.nnunet.networks import build_network
from nnlandmark.nnunet.paths import NnunetFolders


@dataclass(frozen=True)
class TrainingRecipe:
    """What the trainer takes from the layers above: plain values and callables.

    nnU-Net's trainer knows nothing of landmarks; the training layer builds
    this (:func:`nnlandmark.training.train.training_recipe`) from its settings.
    """

    num_landmarks: int  #: output channels of the network
    architecture: str  #: one of :data:`nnlandmark.nnunet.networks.ARCHITECTURES`
    epochs: int  #: the most epochs; a time budget may stop earlier
    iterations_per_epoch: int
    val_iterations: int
    save_every: int  #: epochs between two ``checkpoint_latest.pth``
    lr: float  #: initial learning rate
    optimizer: str  #: ``sgd`` (nnU-Net's SGD with poly decay) or ``adam``
    schedule: str  #: for ``adam``: ``poly`` decay or ``step`` (halved every quarter of the epochs)
    #: ``loss(logits, targets, channel_mask=mask)`` -> scalar tensor
    loss: Callable
    #: ``prepare_batch(data, seg, case_ids, augment)`` -> ``(network input, targets, loss mask (B, L))``,
    #: of an augmented batch already on the training device: ``data`` (B, C, *patch) images,
    #: ``seg`` (B, label maps, *patch) label patches, ``augment`` True for training batches
    prepare_batch: Callable
    #: ``on_curves(curves, folder)`` after every epoch, with the curves of ``training_curves.json``
    #: (e.g. to plot them); ``None`` writes only the JSON
    on_curves: Callable | None = None


def make_trainer(folders: NnunetFolders, dataset_name: str, plans: dict, configuration: str, fold: int,
                 device="cpu", continue_training: bool = False) -> "LandmarkTrainer":
    """nnU-Net's trainer of one configuration and fold of a preprocessed dataset; call
    :meth:`LandmarkTrainer.configure` next. Run it inside
    :func:`nnlandmark.nnunet.paths.nnunet_environment`, where nnU-Net finds its folders."""
    dataset_json = json.loads((Path(folders.preprocessed) / dataset_name / "dataset.json").read_text())
    # nnunetv2 2.8 reads (and pops) continue_training from the plans it is given; the copy keeps the caller's
    plans = {**plans, "continue_training": continue_training}
    return LandmarkTrainer(plans, configuration, fold, dataset_json, torch.device(device))


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

    def configure(self, recipe: TrainingRecipe, model_dir: Path, stage: str = "fullres",
                  time_budget_s: float | None = None, output_folder: Path | None = None) -> None:
        """Apply ``recipe``; write shared files into ``model_dir``, checkpoints into
        ``output_folder`` (default ``model_dir/fold_N``).

        ``stage`` is ``fullres``, or ``global``/``local`` of the cascade (the
        trainer's configuration must be that stage's); ``time_budget_s`` fits
        the number of epochs to the wall clock.
        """
        self.recipe = recipe
        self.stage = stage
        self.time_budget_s = time_budget_s
        if stage == "global":
            self.oversample_foreground_percent = 0.0  # the patch holds the whole scan
        elif stage == "local":
            self.oversample_foreground_percent = 1.0  # every patch around a landmark
        self._max_offset = self.configuration_manager.configuration.get("nnlandmark_max_offset", [0, 0, 0])
        self.num_epochs = recipe.epochs
        self.num_iterations_per_epoch = recipe.iterations_per_epoch
        self.num_val_iterations_per_epoch = recipe.val_iterations
        self.save_every = recipe.save_every
        self.initial_lr = recipe.lr
        self.enable_deep_supervision = False
        self.loss_fn = recipe.loss
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
        return build_network(self.recipe.architecture, configuration_manager, num_input_channels,
                             self.recipe.num_landmarks)

    def set_deep_supervision_enabled(self, enabled: bool):
        decoder = getattr(self.network, "decoder", None)
        if decoder is not None and hasattr(decoder, "deep_supervision"):
            decoder.deep_supervision = enabled

    def configure_optimizers(self):
        if self.recipe.optimizer == "adam":
            optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
            if self.recipe.schedule == "step":
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
    def _inputs(self, batch: dict, augment: bool = False):
        """Network input, targets and loss mask (B, L) of one of nnU-Net's batches, made by
        the recipe's ``prepare_batch`` (``augment`` for training batches)."""
        data = batch["data"].to(self.device, non_blocking=True)
        seg = batch["target"]
        seg = seg[0] if isinstance(seg, list) else seg  # a list only with deep supervision
        seg = seg.to(self.device, non_blocking=True)
        return self.recipe.prepare_batch(data, seg, batch["keys"], augment)

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

    def _logged(self, key: str) -> list:
        """Every epoch's value of ``key`` in nnU-Net's logger (one per epoch, a resumed run's included)."""
        return list(self.logger.get_value(key, step=None))

    def _write_curves(self) -> None:
        curves = {"train_loss": self._logged("train_losses"), "val_loss": self._logged("val_losses"),
                  "lr": self._logged("lrs")}
        n = min(len(v) for v in curves.values())
        curves = {k: [float(x) for x in v[:n]] for k, v in curves.items()}
        Path(self.output_folder, "training_curves.json").write_text(json.dumps(curves))
        if self.recipe.on_curves is not None:
            self.recipe.on_curves(curves, Path(self.output_folder))

    def _epoch_seconds(self) -> list:
        starts, ends = self._logged("epoch_start_timestamps"), self._logged("epoch_end_timestamps")
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
        self._set_num_epochs(min(self.recipe.epochs, max(self.current_epoch, fitted)))

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
                    bar.total = max(its, int(min(self.recipe.epochs, epochs)) * its)
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
