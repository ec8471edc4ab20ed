"""ml_collections configs: one file per stage, the size ladder in models.py."""
