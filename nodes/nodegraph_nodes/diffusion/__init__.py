"""The diffusion library behind the Stable Diffusion node packs.

Everything here imports torch / diffusers / transformers, so node packs import these modules lazily,
inside the methods that do the work: listing or validating a workflow never loads torch.

Where things are:
- files -> modules: `checkpoint_files` (checkpoints, VAEs, ControlNets), `split_files` (lone UNet / text-encoder
  files), `lora`, `upscale`, `clip_vision`; `weights_files` reads the bytes safely.
- the model cache: `model_cache` (ModelCache: placement, budgets), `cache_readers` (the readers it calls, and
  `model_cache(runtime)`: the cache of a node's runtime), `derived` (merged / assembled components), `handles`.
- what nodes do through the cache: `ops` (load, encode text, VAE, sample), `component_ops` (loaders, savers, merges
  of single components).
- sampling: `sampling_run` (one KSampler / SamplerCustom run: noise, sigma slicing, start point, masks), `samplers*`
  and `sampler_registry` (the algorithms), `schedules` (sigmas), `sigma_table` (a model's discrete sigma table and
  the maps around it), `denoiser` / `regions` / `guidance` (what the samplers call).
"""
