"""The package version, written in this one place.

``pyproject.toml`` reads it statically (setuptools ``dynamic`` version: the file is parsed, not
imported, so building needs no torch) and ``emdloss.__version__`` re-exports it. It imports
nothing, so code that needs only the version (the CLI's ``--version``) pays nothing for it.
"""

__version__ = "0.1.0"
