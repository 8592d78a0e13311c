"""The package version, in a leaf module so that code below the package root can read it without a cycle."""

__version__ = "0.1.0"
