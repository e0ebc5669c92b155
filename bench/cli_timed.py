"""`nnUNetv2_predict_from_modelfolder`, unchanged, with the network's forward calls timed.

usage: cli_timed.py TIMING_JSON <the CLI's own arguments>
Runs nnU-Net's own entry point in this process (its worker pools as usual) after wrapping the network's
forward method once the predictor has built it; writes forward seconds/calls (and peak GPU memory) to
TIMING_JSON at the end.
"""

import json
import sys
import time

import torch
from nnunetv2.inference import predict_from_raw_data as p

timing = {"forward_s": 0.0, "forward_calls": 0}
_init = p.nnUNetPredictor.initialize_from_trained_model_folder


def _timed_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    forward = self.network.forward
    cuda = self.device.type == "cuda"

    def timed(*a, **k):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        y = forward(*a, **k)
        if cuda:
            torch.cuda.synchronize()
        timing["forward_s"] += time.perf_counter() - t
        timing["forward_calls"] += 1
        return y

    self.network.forward = timed


if __name__ == "__main__":
    out = sys.argv.pop(1)
    p.nnUNetPredictor.initialize_from_trained_model_folder = _timed_init
    try:
        p.predict_entry_point_modelfolder()
    finally:
        if torch.cuda.is_available():
            timing["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        with open(out, "w") as f:
            json.dump(timing, f)
