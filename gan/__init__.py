"""GAN Workbench: multimodal conditional GANs on Accelerate."""

__version__ = "0.1.0"
