"""nnU-Net's experiment planning: target spacing, patch, network topology and batch size from a
dataset's spacings and shapes (``ablate data plan``). Pure numpy; no torch."""
