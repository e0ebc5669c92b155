"""Peak P(tumour) per tumour component: scipy.ndimage.maximum (the engine before) against component_peaks (now),
in the same run, on real out-of-fold maps.

    python bench/component_peaks.py --oof /work/data/exp/task1_60ep_confident/oof/default --cases 12 \
        --json bench/results/component-peaks.json

Per case: the map's P(tumour) decided at each of the fit's thresholds (0.3-0.6), its 26-connected components,
then both functions on the whole image and on the fit's crop of it (the box around P >= 0.28, as the fit's
search sees it), repeated; checks the values are identical.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage

from panther_ensemble.inference.postprocess import component_peaks


def timed(fn, repeat: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - started) / repeat, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--oof", type=Path, required=True, help="one member's maps folder (<case>.npz)")
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    rows, identical = [], True
    for path in sorted(a.oof.glob("*.npz"))[:a.cases]:
        with np.load(path, allow_pickle=False) as z:  # save_probability_map's format
            pt = np.asarray(z["probabilities"][list(z["labels"]).index("tumor")])
        live = np.argwhere(pt >= 0.28)
        crop = tuple(slice(lo, hi + 1) for lo, hi in zip(live.min(0), live.max(0))) if len(live) else None
        for region, view in (("image", pt), ("crop", pt[crop] if crop else None)):
            if view is None:
                continue
            for t in (0.3, 0.4, 0.5, 0.6):
                comps, n = cc3d.connected_components(view >= t, connectivity=26, return_N=True)
                if n == 0:
                    continue
                s_scipy, ref = timed(lambda: np.asarray(ndimage.maximum(view, comps, np.arange(1, n + 1)), np.float64), a.repeat)
                s_ours, got = timed(lambda: component_peaks(comps, n, view), a.repeat)
                identical &= bool(np.array_equal(ref, got))
                rows.append({"case": path.stem, "region": region, "t": t, "voxels": int(view.size), "components": int(n),
                             "scipy_s": s_scipy, "component_peaks_s": s_ours})
    out = {"machine": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M"), "oof": str(a.oof), "calls": len(rows),
           "identical": identical}
    for region in ("image", "crop"):
        sel = [r for r in rows if r["region"] == region]
        if sel:
            scipy_s, ours_s = sum(r["scipy_s"] for r in sel), sum(r["component_peaks_s"] for r in sel)
            out[region] = {"calls": len(sel), "median_voxels": int(np.median([r["voxels"] for r in sel])),
                           "median_components": int(np.median([r["components"] for r in sel])),
                           "scipy_s": round(scipy_s, 3), "component_peaks_s": round(ours_s, 4),
                           "ratio": round(ours_s / scipy_s, 4)}
    print(json.dumps(out, indent=2))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
