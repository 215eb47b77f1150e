"""Training: the alternating GistNet / LensNet / LoRA cycle (contract §13) and its pieces."""
