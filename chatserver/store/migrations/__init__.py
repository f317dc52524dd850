"""Versioned schema migrations, one sub-package of numbered SQL files per backend."""
