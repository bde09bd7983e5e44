"""Per-region fusion of tabular and imagery landslide probabilities (no torch needed)."""
