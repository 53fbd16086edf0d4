"""Golden-model speed and memory on LoAS-sized layers (VGG16 GEMM shapes, spec/snn.md section 2).

Writes bench/results/golden.json. Target: VGG16 conv2 (M=1024, K=576, N=64, T=4) well
under a second, memory proportional to the layer.
"""

import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from sim.golden import LIFParams, run_layer
from sim.synthetic import random_weights, random_words

SHAPES = {  # name: (M, K, N)
    "vgg16.conv2": (1024, 576, 64),
    "vgg16.conv4": (256, 1152, 128),
    "vgg16.conv7": (64, 2304, 256),
    "vgg16.conv10": (16, 4608, 512),
    "vgg16.conv13": (4, 4608, 512),
    "scaled.conv2x4": (4096, 576, 64),
}


def bench(M, K, N, T=4, silent=0.74, wdens=0.0177, reps=5):
    rng = np.random.default_rng(0)
    words = random_words(rng, (M, K), T, silent)
    w = random_weights(rng, (K, N), wdens)
    bias = np.zeros(N, np.int64)
    run_layer(words, w, bias, LIFParams(64), T)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        res = run_layer(words, w, bias, LIFParams(64), T)
        times.append(time.perf_counter() - t0)
    return {"M": M, "K": K, "N": N, "T": T, "seconds_median": float(np.median(times)),
            "seconds_min": float(min(times)), "effectual_ops": res.stats.effectual_ops}


def main():
    out = {"machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
           "silent_ratio": 0.74, "weight_density": 0.0177, "layers": {}}
    for name, (M, K, N) in SHAPES.items():
        out["layers"][name] = r = bench(M, K, N)
        print(f"{name:<16} M={M:<5} K={K:<5} N={N:<4} {r['seconds_median'] * 1e3:8.1f} ms")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for T in (4, 8, 16):
        out["layers"][f"vgg16.conv2.T{T}"] = bench(1024, 576, 64, T=T)
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/golden.json").write_text(json.dumps(out, indent=2) + "\n")
    print(f"peak RSS {out['peak_rss_mb']:.0f} MB -> bench/results/golden.json")


if __name__ == "__main__":
    main()
