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


def _short_schedule(trainer) -> None:
    trainer.num_iterations_per_epoch = 50
    trainer.num_val_iterations_per_epoch = 8
    trainer.num_epochs = 30
    trainer.save_every = 5
    # half of each batch centred on foreground (stock: a third): the tumour is a small class and the
    # schedule is short
    trainer.oversample_foreground_percent = 0.5


class nnUNetTrainerPhantom(nnUNetTrainer):
    """Default nnU-Net augmentation, short schedule for a 2-core CPU."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short_schedule(self)


class nnUNetTrainerPhantomDA5(nnUNetTrainerDA5):
    """nnU-Net's aggressive DA5 augmentation, same short schedule."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cpu")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        _short_schedule(self)
