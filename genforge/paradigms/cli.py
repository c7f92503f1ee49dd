"""CLI registration: `genforge vae train|sample` and `genforge gan text|oracle|image`."""

import typer

from genforge.paradigms.config import ImageGanConfig, OracleConfig, TextGanConfig, VaeConfig, VaeSampleConfig


def register(app: typer.Typer) -> None:
    from genforge.cli import add_stage_command

    vae = typer.Typer(help="Text variational autoencoder: a latent space of sentences.", no_args_is_help=True)
    app.add_typer(vae, name="vae")
    add_stage_command(
        vae, "train", VaeConfig, run="genforge.paradigms.vae:vae_train",
        help="Train a sequence VAE (KL annealing, word dropout, free bits) on a packed data folder; reports "
             "ELBO, reconstruction NLL, KL and active units.",
        examples=["genforge vae train --data work/data --out runs/vae --max-steps 3000"])
    add_stage_command(
        vae, "sample", VaeSampleConfig, run="genforge.paradigms.vae_sample:vae_sample",
        help="Sentences from the prior of a trained VAE, or interpolated between two sentences.",
        examples=["genforge vae sample --model runs/vae --n 5",
                  "genforge vae sample --model runs/vae --interpolate 'the king is dead' --interpolate "
                  "'long live the queen' --steps 6"])
    gan = typer.Typer(help="Generative adversarial networks: text (SeqGAN, Gumbel) and images (DCGAN).",
                      no_args_is_help=True)
    app.add_typer(gan, name="gan")
    add_stage_command(
        gan, "text", TextGanConfig, run="genforge.paradigms.gan_text:gan_text",
        help="MLE pre-training, then SeqGAN (policy gradient + rollouts) and/or Gumbel-softmax (RelGAN-style) "
             "adversarial training on the sentences of a packed data folder.",
        examples=["genforge gan text --data work/data --out runs/gan --seq-len 20",
                  "genforge gan text --data work/data --out runs/gan --generator tiny --variant gumbel"])
    add_stage_command(
        gan, "oracle", OracleConfig, run="genforge.paradigms.gan_oracle:gan_oracle",
        help="The synthetic-oracle benchmark of SeqGAN/Texygen: NLL-oracle and NLL-test of random, MLE, "
             "MLE at the best temperature and each GAN variant.",
        examples=["genforge gan oracle --oracle ../shared/data/seqgan_oracle --out runs/oracle",
                  "genforge gan oracle --out runs/oracle-random --adv-epochs 50"])
    add_stage_command(
        gan, "image", ImageGanConfig, run="genforge.paradigms.image_gan:gan_image",
        help="DCGAN on a folder of images (one sub-folder per class); reports a Fréchet distance in the space of "
             "a classifier trained on the same images, its real-vs-real floor, and class coverage.",
        examples=["genforge gan image --images photos/ --out runs/dcgan --epochs 25",
                  "genforge gan image --images digits/ --out runs/cgan --conditional --image-size 32"])
