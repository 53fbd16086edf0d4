"""Export speed: one sample of every spike layer of the CIFAR-shaped VGG16.

Random weights magnitude-pruned to 98 % (the trained LoAS weights are not public), one random
normalised 32x32x3 image, T = 4; the export includes the golden-model check of every layer.
The export runs three times (the machine's 2 cores are usually shared, so single runs are noisy);
the median is the figure, and the 1-minute load average before the runs is recorded beside it.
Writes bench/results/export.json.
"""

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from models.export import export_workload
from models.zoo import vgg16

RUNS = 3
EXPORT_THREADS = 1  # export_workload's default (models/export.py says why)


def main():
    torch.manual_seed(0)
    model = vgg16(T=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:  # keep the largest 2 % of every weight tensor
                thr = p.abs().flatten().kthvalue(int(0.98 * p.numel())).values
                p.mul_((p.abs() > thr).to(p.dtype))
    images = torch.randn(1, 3, 32, 32)
    load = os.getloadavg()[0]
    runs = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            rep = export_workload(model, images, None, Path(d) / "vgg16", name="vgg16-bench",
                                  threads=EXPORT_THREADS)
            runs.append(time.perf_counter() - t0)
    seconds = statistics.median(runs)
    out = {"model": "vgg16 (CIFAR shapes, random weights, 98 % pruned)", "samples": 1, "T": 4,
           "torch_threads": torch.get_num_threads(), "export_threads": EXPORT_THREADS, "cpus": os.cpu_count(),
           "load_average_1min": round(load, 2), "seconds": round(seconds, 3),
           "runs": [round(r, 3) for r in runs], "layers": len(rep.get("layers", []))}
    path = Path("bench/results/export.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written result
    print(f"exported {out['layers']} VGG16 spike layers (1 sample) in {seconds:.2f} s (median of "
          f"{RUNS}; export with {EXPORT_THREADS} torch thread(s), load average {load:.1f}) -> bench/results/export.json")


if __name__ == "__main__":
    main()
