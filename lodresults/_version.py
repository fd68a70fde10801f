"""
The installed version, read from the package metadata (``pyproject.toml`` declares it).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["USER_AGENT", "__version__"]

try:
    __version__: str = version("lodresults")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree, not installed
    __version__ = "0+unknown"

#: The ``User-Agent`` header of every request.
USER_AGENT: str = f"lodresults/{__version__}"
