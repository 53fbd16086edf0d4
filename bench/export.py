"""Export speed: one sample of every spike layer of the CIFAR-shaped VGG16 (issue 3's benchmark).

Random weights magnitude-pruned to 98 % (the trained LoAS weights are not public), one random
normalised 32x32x3 image, T = 4; the export includes the golden-model check of every layer.
Writes bench/results/export.json.
"""

import json
import tempfile
import time
from pathlib import Path

import torch

from models.export import export_workload
from models.zoo import vgg16


def main():
    torch.manual_seed(0)
    model = vgg16(T=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:  # keep the largest 2 % of every weight tensor
                thr = p.abs().flatten().kthvalue(int(0.98 * p.numel())).values
                p.mul_((p.abs() > thr).to(p.dtype))
    images = torch.randn(1, 3, 32, 32)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rep = export_workload(model, images, None, Path(d) / "vgg16", name="vgg16-bench")
        seconds = time.perf_counter() - t0
    out = {"model": "vgg16 (CIFAR shapes, random weights, 98 % pruned)", "samples": 1, "T": 4,
           "torch_threads": torch.get_num_threads(), "seconds": round(seconds, 3),
           "layers": len(rep.get("layers", []))}
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/export.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"exported {out['layers']} VGG16 spike layers (1 sample) in {seconds:.2f} s "
          f"with {out['torch_threads']} torch threads -> bench/results/export.json")


if __name__ == "__main__":
    main()
