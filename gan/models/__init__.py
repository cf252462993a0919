"""Generator, discriminator and weight averaging for conditional GANs."""

from gan.models.discriminator import ProjectionDiscriminator
from gan.models.ema import EMA
from gan.models.generator import ConditionalGenerator

__all__ = ["ConditionalGenerator", "ProjectionDiscriminator", "EMA"]
