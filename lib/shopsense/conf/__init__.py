# Makes conf/ importable as the shopsense.conf package (see pyproject.toml); holds no code.
