"""nnU-Net v2 trainers for the phantom specialists (short CPU schedules).

Two specialists that differ the way the winning PANTHER team's do:
- `nnUNetTrainerPhantom`: nnU-Net's default augmentation, short schedule.
- `nnUNetTrainerPhantomDA5`: nnU-Net's aggressive `nnUNetTrainerDA5` augmentation, same schedule.

The schedule (epochs x iterations) is a class default; training/train_specialist.py may override it
per run (it sets the attributes after construction).  Checkpoints written by these trainers carry the
trainer name "nnUNetTrainerPhantom[DA5]"; our inference engine must load them without importing this
module (it builds the network from plans.json).
"""

import contextlib

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDA5 import nnUNetTrainerDA5


class _TumourWeightedLoss:
    """Cross-entropy weight of the tumour class (1.0 = nnU-Net's loss unchanged). The tumour is a small class
    next to a larger one (the pancreas) that it resembles; with weight 1 a small network labels it pancreas for
    thousands of iterations. Set `tumour_ce_weight` before `initialize()` (train_specialist.py --tumour-ce-weight)."""

    tumour_ce_weight = 1.0

    def _build_loss(self):
        loss = super()._build_loss()
        if self.tumour_ce_weight != 1.0:
            inner = getattr(loss, "loss", loss)  # nnU-Net's deep-supervision wrapper keeps the loss in .loss
            labels = self.label_manager.all_labels
            weight = torch.ones(len(labels))
            weight[labels.index(self.dataset_json["labels"]["tumor"])] = float(self.tumour_ce_weight)
            inner.ce.weight = weight.to(self.device)
        return loss


class _CpuSpeed:
    """Two CPU levers for the training step, both off by default (nnU-Net's CPU path unchanged). Set them
    before `initialize()` (train_specialist.py --cpu-autocast, --channels-last).

    - `cpu_autocast = "bf16"`: the network's forward under `torch.autocast("cpu", torch.bfloat16)`, the CPU
      counterpart of the float16 autocast nnU-Net uses on every GPU; the weights, the optimizer and the loss stay
      float32 (the outputs are cast back before the loss: a soft Dice summed over 150k voxels in bfloat16 keeps 3
      significant digits). oneDNN runs bfloat16 convolutions natively on CPUs with AVX512-BF16 or AMX.
    - `channels_last = True`: the network's weights and each batch in torch.channels_last_3d, the layout oneDNN's
      convolutions prefer on the CPU (float32 results differ by rounding only).

    On this 2-core machine both together make a training step of the shipped 24 x 80 x 80 network 2.2x faster
    (bench/training_split.py). Elsewhere than the CPU, nnU-Net's own steps run unchanged."""

    cpu_autocast = "off"
    channels_last = False

    def _cpu_levers(self) -> bool:
        return self.device.type == "cpu" and (self.cpu_autocast != "off" or self.channels_last)

    def _cpu_forward_context(self):
        if self.cpu_autocast == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        if self.cpu_autocast != "off":
            raise ValueError(f"cpu_autocast: {self.cpu_autocast!r} is not off or bf16")
        return contextlib.nullcontext()

    def initialize(self):
        super().initialize()
        if self.channels_last and self.device.type == "cpu":
            # in place: the optimizer (made in initialize) keeps the same Parameter objects
            self.network.to(memory_format=torch.channels_last_3d)

    def _batch_to_device(self, batch: dict):
        data = batch["data"].to(self.device)
        if self.channels_last:
            data = data.contiguous(memory_format=torch.channels_last_3d)
        target = batch["target"]
        target = [t.to(self.device) for t in target] if isinstance(target, list) else target.to(self.device)
        return data, target

    def train_step(self, batch: dict) -> dict:
        if not self._cpu_levers():
            return super().train_step(batch)
        # nnU-Net's CPU train_step with autocast around the forward only (backward under autocast is not
        # recommended by torch), and no grad scaler: bfloat16 has float32's exponent range
        data, target = self._batch_to_device(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with self._cpu_forward_context():
            output = self.network(data)
        output = [o.float() for o in output] if isinstance(output, (list, tuple)) else output.float()
        loss = self.loss(output, target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
        self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        if not self._cpu_levers():
            return super().validation_step(batch)
        # nnU-Net's own step (loss, then the pseudo Dice's tp/fp/fn of the argmax) on a bfloat16 forward
        with self._cpu_forward_context():
            return super().validation_step(batch)


class _SparsePlot:
    """nnU-Net redraws progress.png (a 3000 x 5400 pixel figure) at the end of every epoch: 0.70 CPU-s here
    (bench/progress_plot.py), about 3 % of a 23 s specialist epoch on this 2-core machine. With `plot_every` = N it
    is drawn after every Nth epoch and after the last, so the file is never more than N-1 epochs behind the log; 1 is nnU-Net's behaviour.
    Nothing else of the epoch's end changes (checkpoints, the log, the pseudo Dice)."""

    plot_every = 1

    def on_epoch_end(self):
        epoch = self.current_epoch  # nnU-Net's on_epoch_end counts it up at its end
        if self.plot_every <= 1 or (epoch + 1) % self.plot_every == 0 or epoch >= self.num_epochs - 1:
            return super().on_epoch_end()
        logger = self.logger
        plot = logger.plot_progress_png
        logger.plot_progress_png = lambda output_folder: None
        try:
            return super().on_epoch_end()
        finally:
            logger.plot_progress_png = plot


def _short_schedule(trainer) -> None:
    trainer.num_iterations_per_epoch = 50
    trainer.num_val_iterations_per_epoch = 8
    trainer.num_epochs = 30
    trainer.save_every = 5
    trainer.plot_every = 5  # progress.png with each periodic checkpoint and at the end (_SparsePlot)
    # half of each batch centred on foreground (stock: a third): the tumour is a small class and the
    # schedule is short
    trainer.oversample_foreground_percent = 0.5


class nnUNetTrainerPhantom(_SparsePlot, _CpuSpeed, _TumourWeightedLoss, nnUNetTrainer):
    """Default nnU-Net augmentation, short schedule for a 2-core CPU."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short_schedule(self)


class nnUNetTrainerPhantomDA5(_SparsePlot, _CpuSpeed, _TumourWeightedLoss, nnUNetTrainerDA5):
    """nnU-Net's aggressive DA5 augmentation, same short schedule."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short_schedule(self)


class nnUNetTrainerPhantomTumourFocus(nnUNetTrainerPhantom):
    """Second pre-training stage: default augmentation, tumour cross-entropy weight 4, two thirds of each batch
    centred on foreground. The first stage (nnUNetTrainerPhantom, stock loss) learns the anatomy of both looks
    (pancreas pseudo Dice 0.6-0.7) and a first tumour detector (reproduce.sh requires its tumour head to fire:
    from one that never did, this stage learned nothing in five runs); this stage starts from its weights."""

    tumour_ce_weight = 4.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = 0.66
