"""Generative models over designs (plain torch): the VAE of CbAS and the conditional GAN of MINs."""
