"""Train one fold of one phantom specialist with real nnU-Net v2, then write its out-of-fold
validation (segmentations + softmax probabilities .npz, and summary.json).

The trainer class is imported directly (nnU-Net's lookup by name imports every trainer module and
crashes with this CPU torch, see docs); source training/env.sh first.

    python training/train_specialist.py --dataset 901 --trainer nnUNetTrainerPhantom --fold 0 \
        --epochs 30 [--iters 50] [--pretrained path/to/checkpoint_final.pth] [--lr 0.01] [--device cuda]

--device (default $TRAIN_DEVICE, else cpu) is where nnU-Net's trainer runs: on cuda it takes nnU-Net's own GPU
path (mixed precision, pinned memory), so a lent GPU machine trains the same recipe. On the CPU,
--cpu-autocast bf16 and --channels-last (defaults $TRAIN_CPU_AUTOCAST, $TRAIN_CHANNELS_LAST, else off) are the
trainers' CPU levers (training/trainers.py, _CpuSpeed).
"""

import argparse
import json
import math
import os
import sys
import time

import torch

import collapse  # training/, the script's own folder
import lineage
from panther_ensemble.runtime import native_bf16  # one test of native bfloat16, shared with the engine


def check_learned(output_folder: str, dice_history: list, labels: list[str], floors: dict) -> None:
    """Exit with collapse.COLLAPSED, the run moved aside, when a label's pseudo Dice is below its floor."""
    reason = collapse.collapse_reason(dice_history, labels, floors)
    if reason is None:
        return
    seeded = os.path.join(output_folder, "seeded_from.json")
    if os.path.isfile(seeded):
        # not COLLAPSED: a retry would train afresh from --pretrained, not from the member it was seeded with
        with open(seeded) as f:
            epochs = json.load(f)["epochs"]
        if dice_history and all(math.isnan(float(v)) for v in dice_history[-1]):
            print(f"train_specialist: {output_folder}: seeded at epoch {epochs} (seed_from_shipped.py) and not "
                  "trained on: give --epochs above it", file=sys.stderr, flush=True)
        else:
            print(f"train_specialist: {output_folder}: the run seeded at epoch {epochs} did not learn ({reason}); "
                  "left in place: reseed it (seed_from_shipped.py --force) or train it afresh", file=sys.stderr, flush=True)
        sys.exit(1)
    moved = collapse.move_aside(output_folder)
    print(f"train_specialist: {output_folder}: the run did not learn ({reason}); moved to {moved}, "
          "rerun to train afresh", file=sys.stderr, flush=True)
    sys.exit(collapse.COLLAPSED)


def training_device(name: str) -> torch.device:
    """The torch device the trainer gets; ValueError with the reason when this machine's torch cannot use it
    (a run that silently fell back to the CPU would take hours instead of minutes)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a torch device (cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA device")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: this torch ({torch.__version__}) has no MPS device")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: nnU-Net trains on cpu, cuda or mps")
    return device


def cpu_autocast_choice(value: str, device: torch.device) -> str:
    """off or bf16, the trainer's cpu_autocast; ValueError when bfloat16 is asked of a CPU that would emulate it
    (several times slower than float32 instead of faster). auto: bf16 where oneDNN runs it natively."""
    if value not in ("off", "bf16", "auto"):
        raise ValueError(f"--cpu-autocast {value}: off, bf16 or auto")
    if device.type != "cpu" or value == "off":
        return "off"
    native = native_bf16()
    if value == "auto":
        return "bf16" if native else "off"
    if not native:
        raise ValueError("--cpu-autocast bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX) for oneDNN; "
                         "use off or auto")
    return "bf16"


def on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"{value!r}: on or off")
    return value == "on"


def load_initial_weights(network, checkpoint: str, fresh_heads: bool) -> str:
    """A new run's weights from another run's checkpoint; the line for the training log."""
    # map_location: a checkpoint saved on a GPU machine loads on the CPU (nnU-Net's load_pretrained_weights has none)
    weights = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    network = getattr(network, "_orig_mod", network)  # a torch.compile'd network keeps its weights in the original
    if fresh_heads:
        # a retry of a run that did not learn the tumour from a network whose tumour head never fired: the
        # features are kept, the heads start unbiased (what nnU-Net's fine-tuning loader skips: `.seg_layers.`)
        features = {k: v for k, v in weights.items() if ".seg_layers." not in k}
        missing, unexpected = network.load_state_dict(features, strict=False)
        if unexpected or any(".seg_layers." not in k for k in missing):
            raise RuntimeError(f"{checkpoint} does not fit the network: missing {missing}, unexpected {unexpected} "
                               "(the run must not go on from it)")
        return f"loaded the weights from {checkpoint} except the segmentation heads (fresh)"
    # nnU-Net's load_pretrained_weights skips the segmentation heads (it allows a different label set); ours are
    # the same three labels, and discarding the heads threw away the tumour detector that the pre-training had
    # learned (fine-tuning restarted at tumour Dice 0). Load everything, strictly.
    network.load_state_dict(weights, strict=True)
    return f"loaded all weights (segmentation heads included) from {checkpoint}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True, help="dataset id or name")
    ap.add_argument("--trainer", required=True, choices=["nnUNetTrainerPhantom", "nnUNetTrainerPhantomDA5",
                                                           "nnUNetTrainerPhantomTumourFocus"])
    ap.add_argument("--fold", type=lambda v: v if v == "all" else int(v), required=True,
                    help="0, 1 (splits_final.json) or all (train on every case; no out-of-fold validation)")
    ap.add_argument("--plans", default="nnUNetPlansPhantom")
    ap.add_argument("--configuration", default="3d_fullres")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="iterations per epoch")
    ap.add_argument("--val-iters", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="initial learning rate")
    ap.add_argument("--tumour-ce-weight", type=float, default=None,
                    help="cross-entropy weight of the tumour class (default: the trainer's; 1 = nnU-Net's loss)")
    ap.add_argument("--oversample", type=float, default=None,
                    help="fraction of each batch centred on foreground (the trainers' default: 0.5)")
    ap.add_argument("--pretrained", default=None, help="checkpoint whose weights initialise the network")
    ap.add_argument("--fresh-heads", action="store_true",
                    help="with --pretrained: keep the network's own fresh segmentation heads (nnU-Net's "
                         "load_pretrained_weights) instead of loading every weight")
    ap.add_argument("--skip-validation", action="store_true",
                    help="no nnU-Net validation after training (the out-of-fold maps are then made by our engine: "
                         "training/predict_oof.py, several times faster on this CPU)")
    ap.add_argument("--mirror-validation", action="store_true",
                    help="use test-time mirroring in the final validation (8x slower on CPU; off by default)")
    ap.add_argument("--val-step", type=float, default=0.75,
                    help="sliding-window tile step of the final validation (nnU-Net's is 0.5; 0.75 needs about "
                         "40 %% fewer tiles on this CPU)")
    ap.add_argument("--device", default=os.environ.get("TRAIN_DEVICE", "cpu"),
                    help="cpu, cuda, cuda:N or mps (default: $TRAIN_DEVICE, else cpu)")
    ap.add_argument("--cpu-autocast", default=os.environ.get("TRAIN_CPU_AUTOCAST", "off"),
                    help="on the CPU: off, bf16 (the forward in bfloat16, as nnU-Net's float16 autocast on a GPU) or "
                         "auto (bf16 where the CPU runs it natively) (default: $TRAIN_CPU_AUTOCAST, else off)")
    ap.add_argument("--channels-last", type=on_off, default=os.environ.get("TRAIN_CHANNELS_LAST", "off"),
                    help="on the CPU: on or off, weights and batches in channels_last_3d (default: "
                         "$TRAIN_CHANNELS_LAST, else off)")
    ap.add_argument("--require-pseudo-dice", nargs="+", metavar="LABEL=VALUE", default=None,
                    help="floors on nnU-Net's pseudo Dice (mean of the last 5 epochs) per label, e.g. pancreas=0.3: "
                         "a run below one is moved aside and the script exits with status 3 (training/collapse.py)")
    a = ap.parse_args()
    if a.fresh_heads and not a.pretrained:
        ap.error("--fresh-heads needs --pretrained (the heads are fresh only against a checkpoint's other weights)")
    try:
        floors = collapse.parse_floors(a.require_pseudo_dice)
        device = training_device(a.device)
        cpu_autocast = cpu_autocast_choice(a.cpu_autocast, device)
    except ValueError as e:
        ap.error(str(e))

    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json, join
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.file_path_utilities import get_output_folder
    import trainers

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    name = maybe_convert_to_dataset_name(a.dataset)
    pre = join(nnUNet_preprocessed, name)
    plans = load_json(join(pre, a.plans + ".json"))
    dataset_json = load_json(join(pre, "dataset.json"))
    labels = collapse.foreground_labels(dataset_json)
    try:
        collapse.check_labels(floors, labels)
    except ValueError as e:
        ap.error(str(e))
    plans["continue_training"] = False  # as nnU-Net's run_training does
    # before the trainer exists (it opens its log in the folder): a run there that started from another network
    # than --pretrained is today is moved aside, not resumed nor kept (training/lineage.py)
    fold_folder = get_output_folder(plans["dataset_name"], a.trainer, plans["plans_name"], a.configuration, a.fold)
    try:
        stale = lineage.stale_reason(fold_folder, a.pretrained)
    except lineage.LineageError as e:
        ap.error(str(e))
    if stale:
        moved = collapse.move_aside(fold_folder, why="stale")
        print(f"train_specialist: {fold_folder}: {stale}; moved to {moved}, training afresh", file=sys.stderr, flush=True)
    cls = getattr(trainers, a.trainer)
    tr = cls(plans=plans, configuration=a.configuration, fold=a.fold, dataset_json=dataset_json,
             device=device)
    if os.path.abspath(tr.output_folder) != os.path.abspath(fold_folder):  # the lineage check looked elsewhere
        raise RuntimeError(f"{a.trainer} writes to {tr.output_folder}, not to nnU-Net's {fold_folder}")
    if a.epochs is not None:
        tr.num_epochs = a.epochs
    if a.iters is not None:
        tr.num_iterations_per_epoch = a.iters
    if a.val_iters is not None:
        tr.num_val_iterations_per_epoch = a.val_iters
    if a.lr is not None:
        tr.initial_lr = a.lr
    if a.tumour_ce_weight is not None:
        tr.tumour_ce_weight = a.tumour_ce_weight
    if a.oversample is not None:
        tr.oversample_foreground_percent = a.oversample
    tr.cpu_autocast = cpu_autocast
    tr.channels_last = a.channels_last and device.type == "cpu"
    tr.print_to_log_file(f"phantom schedule on {tr.device}: {tr.num_epochs} epochs x {tr.num_iterations_per_epoch} iterations, "
                         f"lr {tr.initial_lr}, tumour CE weight {tr.tumour_ce_weight}, foreground oversampling "
                         f"{tr.oversample_foreground_percent}, pretrained {a.pretrained}, CPU autocast {tr.cpu_autocast}, "
                         f"channels_last {tr.channels_last}")
    final = join(tr.output_folder, "checkpoint_final.pth")
    latest = join(tr.output_folder, "checkpoint_latest.pth")
    timing_file = join(tr.output_folder, "phantom_timing.json")
    extend = False
    if os.path.isfile(final):
        if os.path.isfile(timing_file):
            done_epochs = load_json(timing_file).get("epochs", 0)
            if done_epochs >= tr.num_epochs:
                print(f"{final} exists ({done_epochs} epochs): nothing to do", flush=True)
                check_learned(tr.output_folder, collapse.pseudo_dice_history(final), labels, floors)
                return
        else:
            # trained to the end but stopped before its check, validation and timing (a crash, a kill): the
            # epochs are in the checkpoint; finish from it instead of training afresh over it
            done_epochs = torch.load(final, map_location="cpu", weights_only=False)["current_epoch"]
        # a longer schedule than the finished one (T_EPOCHS raised): go on from the final weights, optimizer
        # and epoch; the poly learning rate follows the new length, so it rises again (a warm restart)
        extend = not os.path.isfile(latest)
    resumed = os.path.isfile(latest) or extend
    if extend:
        tr.load_checkpoint(final)
        if done_epochs >= tr.num_epochs:
            tr.print_to_log_file(f"finishing the {done_epochs}-epoch run of {final} (no more epochs to train)")
        else:
            tr.print_to_log_file(f"extending the finished {done_epochs}-epoch run from {final} to {tr.num_epochs} epochs")
    elif resumed:
        # nnU-Net's own continue (nnUNetv2_train --c): weights, optimizer, epoch and logs from the last save
        tr.load_checkpoint(latest)
        tr.print_to_log_file(f"resumed from {latest} at epoch {tr.current_epoch}")
    elif a.pretrained:
        tr.initialize()
        tr.print_to_log_file(load_initial_weights(tr.network, a.pretrained, a.fresh_heads))
        lineage.record(tr.output_folder, a.pretrained)
    else:
        lineage.forget(tr.output_folder)
    t0 = time.time()
    tr.run_training()
    t_train = time.time() - t0
    check_learned(tr.output_folder, collapse.pseudo_dice_history(final), labels, floors)
    if not a.skip_validation:
        axes = tr.inference_allowed_mirroring_axes
        if not a.mirror_validation:
            tr.inference_allowed_mirroring_axes = None  # checkpoint_final already keeps the real axes
        # nnU-Net's validation builds its predictor with tile_step_size=0.5; use --val-step instead
        import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as trainer_module
        stock_predictor = trainer_module.nnUNetPredictor

        class _Predictor(stock_predictor):
            def __init__(self, *args, **kwargs):
                kwargs["tile_step_size"] = a.val_step
                super().__init__(*args, **kwargs)

        trainer_module.nnUNetPredictor = _Predictor
        t1 = time.time()
        tr.perform_actual_validation(save_probabilities=True)
        trainer_module.nnUNetPredictor = stock_predictor
        tr.inference_allowed_mirroring_axes = axes
        t_val = time.time() - t1
    else:
        t_val = 0.0
    timing = {"train_s": round(t_train, 1), "resumed": resumed, "tumour_ce_weight": tr.tumour_ce_weight,
              "oversample_foreground_percent": tr.oversample_foreground_percent, "validation_s": round(t_val, 1),
              "epochs": max(tr.num_epochs, tr.current_epoch),  # a checkpoint with more epochs is not cut back
              "iterations_per_epoch": tr.num_iterations_per_epoch, "lr": tr.initial_lr,
              "pretrained": a.pretrained, "fresh_heads": bool(a.fresh_heads and not resumed), "mirrored_validation": bool(a.mirror_validation),
              "validation_tile_step": a.val_step, "device": str(tr.device), "cpu_autocast": tr.cpu_autocast,
              "channels_last": tr.channels_last}
    seeded = join(tr.output_folder, "seeded_from.json")
    if os.path.isfile(seeded):  # training/seed_from_shipped.py: the run's first epochs are a shipped member's
        timing["seeded_from"] = load_json(seeded)["seeded_from"]
    with open(join(tr.output_folder, "phantom_timing.json"), "w") as f:
        json.dump(timing, f, indent=2)
    print("TIMING", json.dumps(timing), flush=True)


if __name__ == "__main__":
    main()
