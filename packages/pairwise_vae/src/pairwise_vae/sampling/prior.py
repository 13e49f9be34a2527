"""Where prior samples are drawn from: the standard normal N(0, I), or a Gaussian mixture fitted to the
training frames' posterior means.

A VAE's encoder does not fill N(0, I) evenly. Latents of a basin that the KL term squeezes
into a corner (for AIB9, the mixed helices) are drawn rarely, and regions that N(0, I) draws
often may hold no training frame at all. Ex-post
density estimation (Ghosh et al., "From variational to deterministic autoencoders", ICLR
2020) fits a density to where the encoder puts the training data and draws from that
instead; the decoder is unchanged. Here the density is a Gaussian mixture with full
covariances (scikit-learn) on the posterior means of the run's training split (at most
``MIXTURE_FIT_FRAMES`` of its frames, evenly spaced).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pairwise_vae.data.split import subsample
from pairwise_vae.model.vae import MolecularVAEMSE
from pairwise_vae.sampling.inference import encode_in_batches, run_split

PRIORS = ("standard", "mixture")
MIXTURE_FIT_FRAMES = 20_000  # plenty for a few dozen Gaussians in tens of dimensions; bounds the encoding time
PRIOR_HELP = (
    "latent distribution of the prior samples: standard, z ~ N(0, I); mixture, a Gaussian mixture "
    "fitted to the posterior means of the checkpoint's training split (reads its training data)"
)


class PriorRequest(Protocol):
    """What a command asks of the prior (the fields of its config): which prior, its components, how many
    draws, and the batch size for encoding the training frames."""

    prior: str
    prior_components: int
    num_samples: int
    batch_size: int


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


def prior_draws(
    request: PriorRequest,
    model: MolecularVAEMSE,
    checkpoint: dict[str, Any],
    checkpoint_path: Path,
    generator: torch.Generator,
    bf16: bool,
) -> tuple[torch.Tensor, str]:
    """(request.num_samples, latent_dim) latents drawn with ``generator`` from the requested prior, and a
    description of it.

    ``mixture`` encodes the training split of the checkpoint's run (:func:`run_split`; at most
    ``MIXTURE_FIT_FRAMES`` frames, evenly spaced) in batches of ``request.batch_size`` and fits
    ``request.prior_components`` Gaussians to the posterior means, seeded by ``generator``'s seed,
    before drawing.
    """
    if request.prior == "standard":
        latents = torch.randn(request.num_samples, model.latent_dim, generator=generator, device=generator.device)
        return latents, "N(0, I)"
    _, train, _ = run_split(checkpoint, checkpoint_path)
    posterior_means, _ = encode_in_batches(
        model, subsample(train, MIXTURE_FIT_FRAMES), request.batch_size, generator.device, bf16
    )
    mixture = fit_latent_mixture(posterior_means, request.prior_components, generator.initial_seed() % 2**32)
    return mixture.sample(request.num_samples, generator), mixture.describe()
