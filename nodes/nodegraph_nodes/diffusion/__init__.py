"""The diffusion library behind the Stable Diffusion node packs.

Everything here imports torch / diffusers / transformers, so node packs import these modules lazily,
inside the methods that do the work: listing or validating a workflow never loads torch.
"""
