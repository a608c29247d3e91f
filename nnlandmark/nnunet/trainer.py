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
- 2D images (nnU-Net's ``2d`` configuration) rotate by at most 30 degrees in
  augmentation, not nnU-Net's 180 (landmark names say left and right);
- with a time budget, the number of epochs is fitted to the wall clock after
  every epoch (the learning-rate schedule follows);
- on several GPUs (nnU-Net's DDP path, started by
  :func:`nnlandmark.nnunet.distributed.spawn`), nnU-Net splits each batch
  across the processes and wraps the network; we add what its trainer does
  not need for itself: unused-parameter detection (the U-Net's deep-supervision
  heads are idle here), the CPU with the gloo backend (for tests), gathered
  validation losses, one budget decision for all processes (rank 0's), rank 0
  alone writing curves and checkpoints, and the split written once.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
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
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from nnlandmark.nnunet import distributed
from nnlandmark.nnunet.checkpoints import load_checkpoint
from nnlandmark.nnunet.console import captured, console_stream
from nnlandmark.nnunet.networks import build_network
from nnlandmark.nnunet.paths import NnunetFolders, fold_key

#: the checkpoint entry holding the state dicts of a recipe's ``extra_parameters``
EXTRA_PARAMETERS_KEY = "nnlandmark_extra_parameters"


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
    #: modules (``torch.nn.Module``) whose parameters are learned with the network, outside it: e.g.
    #: the loss's learned target sigmas. They join the optimizer (their own parameter group, no
    #: weight decay), are moved to the training device, and are kept in every checkpoint
    #: (``nnlandmark_extra_parameters``: their state dicts), so a resumed run continues them;
    #: prediction never reads them
    extra_parameters: tuple = ()
    #: ``on_end(folder)`` once training has ended and ``checkpoint_final.pth`` is written (rank 0 only),
    #: with the stage's checkpoint folder, e.g. to record what ``extra_parameters`` learned
    on_end: Callable | None = None


def make_trainer(folders: NnunetFolders, dataset_name: str, plans: dict, configuration: str, fold: int,
                 device="cpu", continue_training: bool = False) -> "LandmarkTrainer":
    """nnU-Net's trainer of one configuration and fold of a preprocessed dataset; call
    :meth:`LandmarkTrainer.configure` next. Run it inside
    :func:`nnlandmark.nnunet.paths.nnunet_environment`, where nnU-Net finds its folders."""
    dataset_json = json.loads((Path(folders.preprocessed) / dataset_name / "dataset.json").read_text())
    # nnunetv2 2.8 reads (and pops) continue_training from the plans it is given; the copy keeps the caller's
    plans = {**plans, "continue_training": continue_training}
    with captured():  # "Using device: cpu"
        trainer = LandmarkTrainer(plans, configuration, fold, dataset_json, torch.device(device))
    # every process has made nnU-Net's default output folder before any moves its log out of it
    distributed.barrier()
    return trainer


#: the largest rotation (radians) of 2D training patches (nnU-Net's range for 3D; its 2D range is 180 degrees)
PLANAR_ROTATION = 30.0 / 360 * 2 * np.pi


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


def _data_parallel(module, device_ids=None, **kwargs):
    """nnU-Net's ``DDP(network, device_ids=[rank])``, for our networks: deep supervision is off,
    so the U-Net's lower-resolution heads take no part in the loss (DDP must be told), and a
    network on the CPU (gloo) takes no device ids."""
    on_gpu = next(module.parameters()).device.type == "cuda"
    return DistributedDataParallel(module, device_ids=device_ids if on_gpu else None,
                                   find_unused_parameters=True, **kwargs)


class LandmarkTrainer(nnUNetTrainer):
    """Call :meth:`configure` right after construction (nnU-Net's ``__init__``
    records its own arguments by introspection, so ours cannot take more)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        cpu_ddp = distributed.is_distributed() and device.type != "cuda"
        with warnings.catch_warnings():
            if cpu_ddp:  # nnU-Net makes a CUDA GradScaler, which warns and disables itself
                warnings.simplefilter("ignore")
            super().__init__(plans, configuration, fold, dataset_json, device)
        if cpu_ddp:
            # nnU-Net assumes one GPU per process under DDP (cuda:<rank>); the gloo backend
            # runs the same path on the CPU
            self.device = device
            self.grad_scaler = None
        self._written = []  # files this process wrote (checkpoints, curves); reported at the end

    def initialize(self):
        # nnU-Net wraps the network in DDP by the module-level name; ours differs in its arguments
        original = trainer_module.DDP
        trainer_module.DDP = _data_parallel
        try:
            super().initialize()
        finally:
            trainer_module.DDP = original

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
        self._relocate(model_dir, Path(output_folder) if output_folder else model_dir / fold_key(self.fold))

    def _relocate(self, model_dir: Path, output_folder: Path) -> None:
        # nnU-Net's __init__ already made <results>/<dataset>/<class>__<plans>__<config>/fold_N
        # and started a log there; move both into our model folder and drop the empty default.
        default_fold_folder = self.output_folder
        self.output_folder_base = str(model_dir)
        self.output_folder = str(output_folder)
        os.makedirs(self.output_folder, exist_ok=True)
        new_log = os.path.join(self.output_folder, os.path.basename(self.log_file))
        # under DDP rank 0 alone logs, and moves: the processes' logs are named by the second they
        # started, so two may name the same file, and both would move it
        mover = self.local_rank == 0
        if mover and os.path.exists(self.log_file) and os.path.abspath(self.log_file) != os.path.abspath(new_log):
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
        if mover and os.path.abspath(default_fold_folder) != os.path.abspath(self.output_folder):
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
        network = self.network.module if isinstance(self.network, DistributedDataParallel) else self.network
        decoder = getattr(network, "decoder", None)
        if decoder is not None and hasattr(decoder, "deep_supervision"):
            decoder.deep_supervision = enabled

    def configure_optimizers(self):
        if self.recipe.optimizer == "adam":
            optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr, weight_decay=self.weight_decay)
            if self.recipe.schedule == "step":
                scheduler = StepDecay(optimizer, self.initial_lr, max(1, self.num_epochs // 4))
            else:
                from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
                scheduler = PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
        else:
            optimizer, scheduler = super().configure_optimizers()  # nnU-Net's SGD with poly decay
        extra = self._extra_parameters()
        if extra:
            # a group of their own: the schedulers set every group's learning rate, and weight decay
            # would pull them towards 0 (whatever regularises them is in the recipe's loss). Added
            # here, as nnU-Net builds the optimizer before a checkpoint's state is loaded into it
            optimizer.add_param_group({"params": extra, "weight_decay": 0.0})
        return optimizer, scheduler

    def _extra_parameters(self) -> list:
        """The recipe's extra modules' parameters, the modules moved to the training device."""
        params = []
        for module in self.recipe.extra_parameters:
            module.to(self.device)
            params += list(module.parameters())
        return params

    def _set_num_epochs(self, n: int) -> None:
        """Change the schedule's length mid-run (time budget); the learning-rate decay follows."""
        self.num_epochs = int(n)
        if hasattr(self.lr_scheduler, "max_steps"):
            self.lr_scheduler.max_steps = max(1, self.num_epochs)
        elif isinstance(self.lr_scheduler, StepDecay):
            self.lr_scheduler.step_epochs = max(1, self.num_epochs // 4)

    def get_dataloaders(self):
        if self.is_ddp:
            # nnU-Net's trainer writes splits_final.json when it is missing, in every process:
            # one could read it half-written by another. Rank 0 writes it, the others wait.
            if self.local_rank == 0:
                self.do_split()
            distributed.barrier()
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
        patch_size = self.configuration_manager.patch_size
        if len(patch_size) == 2:
            # nnU-Net rotates 2D patches by up to 180 degrees (segmentation does not care which way up);
            # landmarks do: left and right, upper and lower are in their names, and radiographs and
            # ultrasound frames come in a standard orientation. 2D images get the in-plane range nnU-Net
            # gives 3D patches, +-30 degrees, and the initial patch that range needs.
            from nnunetv2.training.data_augmentation.compute_initial_patch_size import get_patch_size
            rotation = (-PLANAR_ROTATION, PLANAR_ROTATION)
            initial_patch_size = get_patch_size(patch_size, rotation, rotation, rotation, (0.85, 1.25))
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
            self._average_extra_gradients()
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self._average_extra_gradients()
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def _average_extra_gradients(self) -> None:
        """Under DDP, average the extra parameters' gradients over the processes, as DDP does for
        the network's (it wraps only the network): every process then takes the same step."""
        if not self.is_ddp:
            return
        for module in self.recipe.extra_parameters:
            for param in module.parameters():
                if param.grad is None:
                    param.grad = torch.zeros_like(param)
                torch.distributed.all_reduce(param.grad)
                param.grad /= torch.distributed.get_world_size()

    def validation_step(self, batch: dict) -> dict:
        return {"loss": self._loss(batch).detach().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs):
        loss = float(np.mean([o["loss"] for o in val_outputs]))
        if self.is_ddp:  # as nnU-Net's training loss: the mean over the processes, the same in each
            loss = float(np.mean(distributed.gather(loss)))
        self.logger.log("val_losses", loss, self.current_epoch)

    def on_train_start(self):
        super().on_train_start()
        if self.is_ddp:
            ranks = distributed.gather((self.batch_size, str(self.device), type(self.network).__name__))
            self.print_to_log_file(
                f"distributed training: {len(ranks)} processes ({distributed.backend()}), batch size "
                f"{self.configuration_manager.batch_size} split as "
                + ", ".join(f"rank {r}: batch {b} on {d} ({n})" for r, (b, d, n) in enumerate(ranks)))

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
        if self.local_rank != 0:  # nnU-Net's writes only in rank 0; the temporary file is rank 0's too
            return
        tmp = os.path.join(os.path.dirname(filename), f".tmp_{os.path.basename(filename)}")
        super().save_checkpoint(tmp)
        if os.path.exists(tmp) and self.recipe.extra_parameters:
            # nnU-Net's checkpoint has no room for parameters outside the network: add them to the
            # file it wrote, before it replaces the previous checkpoint
            checkpoint = load_checkpoint(tmp, mmap=True)
            checkpoint[EXTRA_PARAMETERS_KEY] = [m.state_dict() for m in self.recipe.extra_parameters]
            torch.save(checkpoint, tmp + ".extra")
            del checkpoint
            os.replace(tmp + ".extra", tmp)
        if os.path.exists(tmp):
            os.replace(tmp, filename)
            self._written.append(os.path.basename(filename))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        # nnU-Net's load_checkpoint unpickles with weights_only=False (a checkpoint could run code) and
        # takes only a path in 2.8 (a dict reaches an unassigned name): this is its body around our
        # safe loader (nnunet/checkpoints.py), plus the extra parameters nnU-Net has no room for
        from torch._dynamo import OptimizedModule
        if not self.was_initialized:
            with captured():
                self.initialize()  # builds the network and optimizer
        checkpoint = filename_or_checkpoint if isinstance(filename_or_checkpoint, dict) else \
            load_checkpoint(filename_or_checkpoint, map_location=self.device)
        network = self.network.module if self.is_ddp else self.network
        if isinstance(network, OptimizedModule):
            network = network._orig_mod
        own = network.state_dict().keys()
        # a state dict saved from nn.DataParallel names its keys "module.<key>"
        network.load_state_dict({k[len("module."):] if k not in own and k.startswith("module.") else k: v
                                 for k, v in checkpoint["network_weights"].items()})
        self.my_init_kwargs = checkpoint["init_args"]
        self.current_epoch = checkpoint["current_epoch"]
        self.logger.load_checkpoint(checkpoint["logging"])
        self._best_ema = checkpoint["_best_ema"]
        self.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                               self.inference_allowed_mirroring_axes)
        self.optimizer.load_state_dict(checkpoint["optimizer_state"])
        if self.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
            self.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
        if not self.recipe.extra_parameters:
            return
        states = checkpoint.get(EXTRA_PARAMETERS_KEY)
        if states is None or len(states) != len(self.recipe.extra_parameters):
            self.print_to_log_file(f"{filename_or_checkpoint}: holds no extra parameters for this recipe; "
                                   "they start from their initial values")
            return
        for module, state in zip(self.recipe.extra_parameters, states):
            module.load_state_dict(state)

    def on_train_end(self):
        super().on_train_end()  # writes checkpoint_final.pth, then deletes checkpoint_latest.pth
        if self.recipe.on_end is not None and self.local_rank == 0:
            self.recipe.on_end(Path(self.output_folder))
        if self.is_ddp:
            written = distributed.gather(sorted(set(self._written)))
            self.print_to_log_file("files written: " + "; ".join(
                f"rank {r}: {', '.join(names) or 'none'}" for r, names in enumerate(written)))

    def _logged(self, key: str) -> list:
        """Every epoch's value of ``key`` in nnU-Net's logger (one per epoch, a resumed run's included)."""
        return list(self.logger.get_value(key, step=None))

    def _write_curves(self) -> None:
        if self.local_rank != 0:
            return
        curves = {"train_loss": self._logged("train_losses"), "val_loss": self._logged("val_losses"),
                  "lr": self._logged("lrs")}
        n = min(len(v) for v in curves.values())
        curves = {k: [float(x) for x in v[:n]] for k, v in curves.items()}
        Path(self.output_folder, "training_curves.json").write_text(json.dumps(curves))
        self._written.append("training_curves.json")
        if self.recipe.on_curves is not None:
            self.recipe.on_curves(curves, Path(self.output_folder))

    def _epoch_seconds(self) -> list:
        starts, ends = self._logged("epoch_start_timestamps"), self._logged("epoch_end_timestamps")
        return [e - s for s, e in zip(starts, ends)]

    def _fit_to_budget(self) -> None:
        """Epochs that fit the time budget, from the mean epoch time so far (a resumed
        run counts the epochs it already trained). Under DDP rank 0's clock decides for all
        processes: each measures its own epochs, and processes that stop at different
        epochs would wait on each other for ever."""
        if self.time_budget_s is None:
            return
        seconds = self._epoch_seconds()
        epochs = None
        if seconds:
            recent = float(np.mean(seconds[-5:]))
            left = self.time_budget_s - float(np.sum(seconds))
            fitted = self.current_epoch + math.floor(left / recent)
            epochs = min(self.recipe.epochs, max(self.current_epoch, fitted))
        epochs = distributed.from_rank_0(epochs)
        if epochs is not None:
            self._set_num_epochs(epochs)

    def run_training(self, progress: bool = True):
        with captured():  # nnU-Net's and torch's messages go to the log; our bar stays on the console
            self._run_training(progress)

    def _run_training(self, progress: bool) -> None:
        self.on_train_start()
        self._fit_to_budget()  # a resumed run
        its = self.num_iterations_per_epoch
        # a budgeted run knows its total only once an epoch was timed (or, resumed, at once): until
        # then the bar counts without one, so that its total changes only when the budget refits it
        known = self.time_budget_s is None or bool(self._epoch_seconds())
        bar = tqdm(total=self.num_epochs * its if known else None, initial=self.current_epoch * its,
                   disable=not progress or self.local_rank != 0, file=console_stream(),
                   desc=f"fold {self.fold} {self.stage}", unit="it", dynamic_ncols=True)
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(its):
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                bar.update()
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
