"""The workflow engine: torch-free workflow model, validation, cache and executor."""
