"""Generative paradigms beside the LM: text VAE, text GANs (SeqGAN, Gumbel) with the oracle benchmark, DCGAN."""
