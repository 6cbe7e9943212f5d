"""chatmod: a daemon that moderates live chat."""

from chatmod._version import __version__

__all__ = ["__version__"]
