"""DCGAN on scikit-learn's 8x8 handwritten digits (1,797 images, 10 classes), upscaled to 32x32.

Writes the digits as a PNG folder (one sub-folder per class) and runs `genforge gan image` on it,
unconditional and conditional. Evaluation needs no download: a small CNN trained on the real images
in the same run gives the feature space of a Fréchet distance (FID-like; DCGAN reaches FID 25-45 on
CIFAR-10 with Inception features, not comparable in scale), its floor is the distance between real
training and held-out images (the baseline: what a perfect generator would score), and class
coverage counts the classes the classifier finds among generated digits. Printed: both distances and
their ratio, coverage, the classifier's accuracy (how much to trust its features), time.

    .venv/bin/python benchmarks/bench_image_gan.py            # the real thing (about 15 min)
    .venv/bin/python benchmarks/bench_image_gan.py --quick    # smoke: 1 epoch, 16x16 images
"""

from __future__ import annotations

import time
from pathlib import Path

from runargs import run_args


def write_digits(folder: Path) -> Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / str(label) / f"{i:04d}.png")
    return folder


def main() -> None:
    args, out = run_args(__doc__, "smoke run (about a minute)", "bench_image_gan_")

    from genforge.paradigms.config import ImageGanConfig
    from genforge.paradigms.image_gan import gan_image

    images = write_digits(out / "digits")
    size, epochs = (16, 1) if args.quick else (32, 30)
    results = {}
    for conditional in (False, True):
        name = "conditional" if conditional else "unconditional"
        t0 = time.perf_counter()
        cfg = ImageGanConfig(images=images, out=out / name, image_size=size, epochs=epochs, conditional=conditional,
                             classifier_epochs=2 if args.quick else 10, eval_samples=1000)
        results[name] = {**gan_image(cfg), "seconds": time.perf_counter() - t0}

    print(f"\nDCGAN on sklearn digits ({size}x{size}, {epochs} epochs); folders in {out}")
    print(f"{'run':<14} {'FD gen':>9} {'FD real floor':>13} {'ratio':>7} {'coverage':>8} {'cond acc':>8} "
          f"{'clf acc':>7} {'min':>5}")
    for name, r in results.items():
        cond = f"{r['conditional_accuracy']:.3f}" if "conditional_accuracy" in r else "-"
        print(f"{name:<14} {r['fid_classifier']:>9.2f} {r['fid_real_floor']:>13.2f} "
              f"{r['fid_classifier'] / max(r['fid_real_floor'], 1e-9):>7.2f} {r['coverage']:>8.2f} {cond:>8} "
              f"{r['classifier_accuracy']:>7.3f} {r['seconds'] / 60:>5.1f}")


if __name__ == "__main__":
    main()
