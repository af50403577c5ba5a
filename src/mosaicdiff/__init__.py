"""mosaicdiff: where creativity in diffusion models comes from.

Trained score networks and closed-form score machines share one denoiser interface
(`mosaicdiff.denoiser.Denoiser`), so the same samplers, metrics and plots apply to both.
"""

__version__ = "0.1.0"
