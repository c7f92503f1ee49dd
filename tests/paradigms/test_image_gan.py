"""Image GAN: DCGAN shapes and losses (signs, gradients only where they belong), evaluation, image folder, resume."""

import json
import re

import numpy as np
import pytest
import torch

from genforge.errors import ConfigError, DataError
from genforge.paradigms.config import ImageGanConfig
from genforge.paradigms.frechet import coverage, frechet_distance
from genforge.paradigms.image_gan import (
    discriminate,
    discriminator_loss,
    discriminator_net,
    gan_image,
    generate,
    generator_loss,
    generator_net,
)
from genforge.paradigms.images import load_image_folder, save_grid


@pytest.mark.parametrize("size", [16, 32, 64])
def test_dcgan_shapes(size):
    g, d = generator_net(10, 3, size, 8, classes=4), discriminator_net(3, size, 8, classes=4)
    labels = torch.tensor([0, 3])
    x = generate(g, torch.randn(2, 10), labels, 4)
    assert x.shape == (2, 3, size, size) and x.abs().max() <= 1
    assert discriminate(d, x, labels, 4).shape == (2,)


def test_losses_signs_and_gradients_flow_only_where_they_should():
    torch.manual_seed(0)
    g, d = generator_net(8, 1, 16, 8), discriminator_net(1, 16, 8)
    fake = generate(g, torch.randn(4, 8), None, 0)
    d_loss = discriminator_loss(discriminate(d, torch.rand(4, 1, 16, 16), None, 0), discriminate(d, fake.detach(), None, 0))
    d_loss.backward()
    assert all(p.grad is None for p in g.parameters())  # the discriminator step does not train G
    d.zero_grad()
    g_opt = torch.optim.Adam(g.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in d.parameters()]
    generator_loss(discriminate(d, fake, None, 0)).backward()
    g_opt.step()  # the generator step updates G only
    assert all(torch.equal(a, b) for a, b in zip(before, d.parameters(), strict=True))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    high, low = torch.full((4,), 6.0), torch.full((4,), -6.0)
    assert discriminator_loss(high, low) < 0.01 < 10 < discriminator_loss(low, high)
    assert generator_loss(high) < 0.01 < 5 < generator_loss(low)  # non-saturating: large where D wins


def test_frechet_distance_and_coverage():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, a + 3.0) == pytest.approx(4 * 9.0, rel=1e-3)  # ||shift||^2 with equal covariances
    assert frechet_distance(a, 2 * a) == pytest.approx(4 * (1 - 2) ** 2, rel=0.1)  # Tr(S + 4S - 2*2S) = Tr(S)
    assert coverage(np.array([0, 1, 2, 3] * 10), 4) == 1.0
    assert coverage(np.array([0] * 40), 4) == 0.25


def test_image_folder(tmp_path, digits, capsys):
    x, y, classes = load_image_folder(digits, 16)
    assert "images: 100%" in capsys.readouterr().err  # a folder of photos takes minutes: a progress bar shows it
    assert x.shape[1:] == (1, 16, 16) and classes == ["0", "1", "2"] and len(x) == len(y)
    assert x.min() >= -1 and x.max() <= 1
    assert save_grid(x[:10], tmp_path / "grid.png").stat().st_size > 0
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "x.png").write_text("not an image")
    with pytest.raises(DataError, match="not a readable image"):
        load_image_folder(tmp_path / "bad", 16)
    with pytest.raises(DataError, match="no PNG/JPEG"):
        load_image_folder(tmp_path / "bad" / "a", 16)
    with pytest.raises(DataError, match="is a file: give a folder"):
        load_image_folder(tmp_path / "bad" / "a" / "x.png", 16)


def test_class_folder_without_images_is_refused(tmp_path, digits):
    """An empty class folder counted as a class no generated image could ever be: coverage stayed below 1."""
    import shutil

    folder = shutil.copytree(digits, tmp_path / "digits")
    (folder / "9").mkdir()
    with pytest.raises(DataError, match=r"class folder .*9 holds no PNG/JPEG images: add some or remove the folder"):
        load_image_folder(folder, 16)


def test_16_bit_png_keeps_its_grey_levels(tmp_path):
    """Pillow's own conversion clipped 16-bit values at 255: nearly every pixel came out white."""
    from PIL import Image

    (tmp_path / "a").mkdir()
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "a" / "ramp.png")
    x, _, _ = load_image_folder(tmp_path, 16)
    assert x.shape == (1, 1, 16, 16)
    assert x.mean().item() == pytest.approx(0.0, abs=0.05) and x.min() < -0.9 and x.max() > 0.9


def test_a_redo_keeps_no_grid_of_the_earlier_run(tmp_path, digits):
    """A redo with fewer epochs left the earlier run's later epoch grids (and its events) in logs/."""
    cfg = dict(images=digits, out=tmp_path / "run", image_size=16, width=8, latent_size=16, epochs=2,
               log_every=2, classifier_epochs=0, eval_samples=20)
    gan_image(ImageGanConfig(**cfg))
    gan_image(ImageGanConfig(**{**cfg, "epochs": 1}))
    logs = {p.name for p in (cfg["out"] / "logs").iterdir()}
    assert "epoch_001.png" in logs and "epoch_002.png" not in logs
    assert len([n for n in logs if n.startswith("events.out.tfevents")]) == 1


def test_gan_image_trains_evaluates_and_resumes(tmp_path, digits):
    cfg = dict(images=digits, out=tmp_path / "run", image_size=16, width=8, latent_size=16, epochs=1,
               batch_size=64, log_every=2, classifier_epochs=2, eval_samples=100, conditional=True)
    gan_image(ImageGanConfig(**cfg))
    metrics = gan_image(ImageGanConfig(**{**cfg, "epochs": 2, "resume": True}))
    assert metrics["epochs"] == 2 and metrics["fid_classifier"] > 0 and metrics["fid_real_floor"] >= 0
    assert 0 <= metrics["coverage"] <= 1 and 0 <= metrics["conditional_accuracy"] <= 1
    out = cfg["out"]
    assert {"epoch_001.png", "epoch_002.png"} <= {p.name for p in (out / "logs").iterdir()}
    steps = [json.loads(line)["step"] for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert json.loads((out / "manifest.json").read_text())["stage"] == "gan.image"


def test_a_resume_with_other_settings_says_so_and_trains_with_them(tmp_path, digits, capsys):
    """A resume with another --batch-size or --lr carried on without a word, and Adam's load_state_dict
    brought back the saved learning rate: --lr given with --resume was silently ignored."""
    cfg = dict(images=digits, out=tmp_path / "run", image_size=16, width=8, latent_size=16, epochs=1,
               batch_size=64, log_every=2, classifier_epochs=0, eval_samples=20)
    gan_image(ImageGanConfig(**cfg))
    capsys.readouterr()
    gan_image(ImageGanConfig(**{**cfg, "epochs": 2, "batch_size": 32, "lr": 1e-3, "resume": True}))
    told = re.search(r"resumed at epoch 1 \(step (\d+)\) with other settings: epochs 1 -> 2, batch_size 64 -> 32, "
                     r"lr 0.0002 -> 0.001 \(kept in logs/metrics.jsonl\)", capsys.readouterr().err)
    assert told
    records = [json.loads(line) for line in (cfg["out"] / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert {"step": int(told[1]), "kind": "resume", "changed": {"epochs": [1, 2], "batch_size": [64, 32],
                                                               "lr": [0.0002, 0.001]}} in records
    state = torch.load(cfg["out"] / "checkpoints" / "latest" / "trainer_state.pt", weights_only=True)
    assert {g["lr"] for name in ("g_opt", "d_opt") for g in state[name]["param_groups"]} == {1e-3}
    assert state["settings"]["batch_size"] == 32


def test_absurd_network_sizes_are_refused_before_the_output_is_touched(tmp_path, digits):
    cfg = ImageGanConfig(images=digits, out=tmp_path / "run", image_size=16, width=10**6)
    with pytest.raises(ConfigError, match=r"^--latent-size 100 --width 1000000: a model of [\d,]+ parameters"):
        gan_image(cfg)
    assert not cfg.out.exists()


class RealImages(torch.nn.Module):
    """A perfect generator: every image it returns is a fresh draw from the real images' distribution."""

    def __init__(self, draw):
        super().__init__()
        self.draw = draw

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.draw(len(z))


def test_a_perfect_generator_scores_the_floor_with_fewer_samples_than_held_out_images(tmp_path):
    """With --eval-samples (40) below the held-out count (200), the floor was the distance of 200 training vs the 200
    held-out images while the generated side had 40: a perfect generator scored 3.4x the floor (bias ~ 1/n)."""
    from genforge.paradigms.image_gan import evaluate

    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 16, 16, generator=g)

    def draw(n: int) -> torch.Tensor:  # one distribution: a fixed pattern, noise, a random brightness
        return (base + 0.5 * torch.rand(n, 1, 16, 16, generator=g) + 0.5 * torch.rand(n, 1, 1, 1, generator=g)) - 1

    x_train, x_held = draw(800), draw(200)
    labels = torch.zeros(800, dtype=torch.long), torch.zeros(200, dtype=torch.long)
    cfg = ImageGanConfig(images=tmp_path, out=tmp_path / "run", latent_size=4, classifier_epochs=0, eval_samples=40)
    ratios = [(m["fid_classifier"] / m["fid_real_floor"])
              for m in (evaluate(RealImages(draw), x_train, labels[0], x_held, labels[1], 1, 0, cfg) for _ in range(3))]
    assert 0.6 < np.mean(ratios) < 1.4
