"""Model definitions and checkpoint loaders (CLIP, LAION aesthetic MLP, UniMatch)."""
