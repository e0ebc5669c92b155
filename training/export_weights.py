"""Copy trained specialists from $nnUNet_results into model_weights/ with inference-only checkpoints.

    python training/export_weights.py [--dest model_weights] [--folds 0 1] MODEL_DIR...

MODEL_DIR is a trained model folder <results>/DatasetXXX_Name/<trainer>__<plans>__<configuration>.
Written: dest/DatasetXXX_Name/<trainer>__<plans>__<configuration>/{dataset.json, plans.json,
fold_k/checkpoint_final.pth}, each checkpoint reduced to network_weights, init_args (configuration and
fold only), trainer_name, inference_allowed_mirroring_axes and current_epoch, floating-point weights
stored as float16 (--dtype; the networks still compute in float32: load_state_dict casts them back).
Why float16: fold checkpoints of 1.1 M parameters are 4.6 MB each in float32, and the shipped models must
stay at or under 40 MB (12 fold checkpoints: 27.6 MB in float16); with the rounded weights the Task 1 sample case gives the identical mask (measured,
training/README.md).  The full outputs stay where they are.
"""

import argparse
import shutil
from pathlib import Path

import torch

KEEP = ("network_weights", "trainer_name", "inference_allowed_mirroring_axes", "current_epoch")


def strip_checkpoint(src: Path, dst: Path, dtype: torch.dtype = torch.float16) -> None:
    ck = torch.load(src, map_location="cpu", weights_only=False)  # our own trainer's output
    out = {k: ck[k] for k in KEEP}
    out["network_weights"] = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).clone().contiguous()
                              for k, v in ck["network_weights"].items()}
    ax = out["inference_allowed_mirroring_axes"]
    out["inference_allowed_mirroring_axes"] = None if ax is None else tuple(int(a) for a in ax)
    out["current_epoch"] = int(out["current_epoch"])
    out["init_args"] = {"configuration": str(ck["init_args"]["configuration"]), "fold": ck["init_args"]["fold"]}
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, dst)
    # the result must load with the safe loader
    torch.load(dst, map_location="cpu", weights_only=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--dest", default=str(Path(__file__).resolve().parents[1] / "model_weights"))
    ap.add_argument("--folds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    a = ap.parse_args()
    for m in a.models:
        m = Path(m)
        dst = Path(a.dest) / m.parent.name / m.name
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for f in ("dataset.json", "plans.json"):
            shutil.copy2(m / f, dst / f)
        for k in a.folds:
            strip_checkpoint(m / f"fold_{k}" / "checkpoint_final.pth", dst / f"fold_{k}" / "checkpoint_final.pth",
                             getattr(torch, a.dtype))
        size = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
        print(f"{dst}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
