"""Injectable randomness for contrastive denoising and multi-scale training.

The official model draws denoising noise from torch's global RNG in this order:
a uniform per label (label flip), new random labels, random box-noise sign bits,
random box-noise magnitudes. A noise source is any object with these four methods;
each twin has a default that uses its framework's global RNG (the reference's one
reproduces the official draws exactly). ``NumpyDenoisingNoise`` returns NumPy
arrays from one ``numpy.random.Generator``, so the harness can feed both frameworks
the same noise.
"""
import numpy as np


class NumpyDenoisingNoise:
    """Denoising noise drawn from a NumPy generator, as float32/int64 arrays."""

    def __init__(self, rng):
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def label_uniform(self, shape):
        """Uniform [0, 1) per label; labels below ``label_noise_ratio * 0.5`` are replaced."""
        return self.rng.random(shape, dtype=np.float32)

    def new_labels(self, shape, num_classes):
        """Replacement labels, uniform over ``[0, num_classes)``."""
        return self.rng.integers(0, num_classes, size=shape, dtype=np.int64)

    def box_sign_bits(self, shape):
        """0/1 per box coordinate; the sign is ``bit * 2 - 1``."""
        return self.rng.integers(0, 2, size=shape).astype(np.float32)

    def box_uniform(self, shape):
        """Uniform [0, 1) magnitude per box coordinate."""
        return self.rng.random(shape, dtype=np.float32)


class NumpySizeSampler:
    """Multi-scale size choice from a NumPy generator (``choice(sizes)``)."""

    def __init__(self, rng):
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def choice(self, sizes):
        return int(sizes[self.rng.integers(0, len(sizes))])
