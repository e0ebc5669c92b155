"""nnU-Net v2 trainers for the phantom specialists (short CPU schedules).

Two specialists that differ the way the winning PANTHER team's do:
- `nnUNetTrainerPhantom`: nnU-Net's default augmentation, short schedule.
- `nnUNetTrainerPhantomDA5`: nnU-Net's aggressive `nnUNetTrainerDA5` augmentation, same schedule.

The schedule (epochs x iterations) is a class default; training/train_specialist.py may override it
per run (it sets the attributes after construction).  Checkpoints written by these trainers carry the
trainer name "nnUNetTrainerPhantom[DA5]"; our inference engine must load them without importing this
module (it builds the network from plans.json).
"""

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


def _short_schedule(trainer) -> None:
    trainer.num_iterations_per_epoch = 50
    trainer.num_val_iterations_per_epoch = 8
    trainer.num_epochs = 30
    trainer.save_every = 5
    # half of each batch centred on foreground (stock: a third): the tumour is a small class and the
    # schedule is short
    trainer.oversample_foreground_percent = 0.5


class nnUNetTrainerPhantom(_TumourWeightedLoss, nnUNetTrainer):
    """Default nnU-Net augmentation, short schedule for a 2-core CPU."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short_schedule(self)


class nnUNetTrainerPhantomDA5(_TumourWeightedLoss, nnUNetTrainerDA5):
    """nnU-Net's aggressive DA5 augmentation, same short schedule."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short_schedule(self)


class nnUNetTrainerPhantomTumourFocus(nnUNetTrainerPhantom):
    """Second pre-training stage: default augmentation, tumour cross-entropy weight 4, two thirds of each batch
    centred on foreground. The first stage (nnUNetTrainerPhantom, stock loss) learns the anatomy of both looks
    (pancreas pseudo Dice 0.6) but labels the tumour pancreas; this stage starts from its weights."""

    tumour_ce_weight = 4.0

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.oversample_foreground_percent = 0.66
