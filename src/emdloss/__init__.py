"""emdloss: exact squared Earth Mover's Distance losses for ordered classes."""

__version__ = "0.1.0"

__all__ = ["__version__"]
