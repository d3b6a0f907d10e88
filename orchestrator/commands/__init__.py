"""One module per group of ``ablate`` verbs; each exposes ``register(subparsers)``."""
