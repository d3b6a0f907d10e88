"""The pure-torch training engine: trial config, epoch loop, checkpoints, inference."""
