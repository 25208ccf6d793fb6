"""Test configuration: its presence puts tests/ on sys.path (for `_requirements` and `_workers`)."""
