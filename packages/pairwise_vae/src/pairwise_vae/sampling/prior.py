"""Where prior samples are drawn from: a Gaussian mixture fitted to the training frames' posterior means
(the model's own prior, the default), or the standard normal N(0, I).

A VAE's encoder does not fill N(0, I) evenly. Latents of a basin that the KL term squeezes
into a corner (for AIB9, the mixed helices) are drawn rarely, and regions that N(0, I) draws
often may hold no training frame at all. Ex-post
density estimation (Ghosh et al., "From variational to deterministic autoencoders", ICLR
2020) fits a density to where the encoder puts the training data and draws from that
instead; the decoder is unchanged. Here the density is a Gaussian mixture of
``MIXTURE_COMPONENTS`` Gaussians with full covariances (scikit-learn) on the posterior means of
the run's training split (at most ``MIXTURE_FIT_FRAMES`` of its frames, evenly spaced), fitted
when training ends and stored in the checkpoint (:mod:`pairwise_vae.sampling.sampler`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

PRIORS = ("mixture", "standard")
MIXTURE_COMPONENTS = 16  # Gaussians of the mixture (fewer when fitted to fewer frames)
MIXTURE_FIT_FRAMES = 20_000  # plenty for a few dozen Gaussians in tens of dimensions; bounds the encoding time
PRIOR_HELP = (
    "latent distribution of the prior samples: mixture, the Gaussian mixture fitted to the posterior means of the "
    "training split when training ended (stored in the checkpoint); standard, z ~ N(0, I) (with "
    "--no-torsion-noise: the raw decoder); not used by --latents or --interpolate"
)


@dataclass(frozen=True)
class LatentMixture:
    """A Gaussian mixture over the latent space.

    ``weights``: (K,) component probabilities; ``means``: (K, D); ``scale_tril``: (K, D, D)
    lower Cholesky factors of the component covariances; ``frames``: how many posterior
    means it was fitted to.
    """

    weights: torch.Tensor
    means: torch.Tensor
    scale_tril: torch.Tensor
    frames: int

    def sample(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """(count, D) draws, on the generator's device."""
        device = generator.device
        component = torch.multinomial(self.weights.to(device), count, replacement=True, generator=generator)
        noise = torch.randn(count, self.means.shape[1], 1, generator=generator, device=device)
        return self.means.to(device)[component] + (self.scale_tril.to(device)[component] @ noise).squeeze(-1)

    def describe(self) -> str:
        return (
            f"a {len(self.weights)}-component Gaussian mixture fitted to the posterior means of "
            f"{self.frames} training frames"
        )

    def to_record(self) -> dict[str, Any]:
        """The mixture as plain tensors and numbers (for the checkpoint)."""
        return {"weights": self.weights, "means": self.means, "scale_tril": self.scale_tril, "frames": self.frames}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LatentMixture:
        """Inverse of :meth:`to_record`."""
        return cls(
            record["weights"].float(), record["means"].float(), record["scale_tril"].float(), int(record["frames"])
        )


def fit_latent_mixture(posterior_means: np.ndarray, components: int, seed: int) -> LatentMixture:
    """Fit a full-covariance Gaussian mixture to (F, D) posterior means (at most F components)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture  # imported here: only this prior needs it (about 1 s to import)

    means = posterior_means.astype(np.float64)
    mixture = GaussianMixture(min(components, len(means)), covariance_type="full", random_state=seed)
    with warnings.catch_warnings():
        # near-identical means (a collapsed latent) leave some components empty: the fit is still usable
        warnings.simplefilter("ignore", ConvergenceWarning)
        mixture.fit(means)
    return LatentMixture(
        weights=torch.from_numpy(mixture.weights_).float(),
        means=torch.from_numpy(mixture.means_).float(),
        scale_tril=torch.linalg.cholesky(torch.from_numpy(mixture.covariances_)).float(),
        frames=len(means),
    )
