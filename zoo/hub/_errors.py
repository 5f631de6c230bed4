"""The errors and warnings of the hub, so that callers can catch each problem by its class."""

# The naming errors belong to the registry (zoo.models); the hub raises them too.
from ..models import UnknownModelError as UnknownModelError, UnsafeNameError as UnsafeNameError


class WeightsNotFoundError(FileNotFoundError):
    """No pretrained weights exist under the name, tag or folder."""


class WeightsError(ValueError):
    """A weights folder whose contents cannot be used as they are."""


class ChecksumMismatchError(WeightsError):
    """The weights file's SHA-256 differs from the one its card or URL pins."""


class TruncatedWeightsError(WeightsError):
    """The weights file is shorter than its card says, or a download stopped early."""


class ArchitectureMismatchError(WeightsError):
    """The weights do not fit the architecture: a leaf's shape or dtype differs, or the
    numbers of leaves differ."""


class GoldenMismatchError(WeightsError):
    """A loaded model does not reproduce the golden outputs stored beside its weights."""


class DownloadError(OSError):
    """Weights could not be fetched from a URL."""


class OfflineError(DownloadError):
    """`ZOO_OFFLINE=1` forbids the network download that was needed."""


class DownloadLimitError(DownloadError):
    """A download was larger than its stated size (or the cap), or ran past its deadline."""


class PublishTagError(ValueError):
    """A tag to publish under is already taken by one of zoo's own weight sets."""


class DamagedCacheWarning(UserWarning):
    """A folder of the download cache failed verification and was removed to be fetched again."""


class HeadReinitialisedWarning(UserWarning):
    """Pretrained weights were loaded with a new classifier head, initialised at random."""
