"""The installed distribution's name and version, in one place."""

import importlib.metadata

# The PyPI distribution; the import name is `zoo`. (`eqx-zoo` belongs to another project.)
DISTRIBUTION = "equinox-zoo"

try:
    __version__ = importlib.metadata.version(DISTRIBUTION)
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"
