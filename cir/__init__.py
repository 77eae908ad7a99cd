"""cir: two-stage composed image retrieval."""

from .errors import CirError
from .types import Gallery, Query, Ranking, Run

__version__ = "0.1.0"
__all__ = ["CirError", "Gallery", "Query", "Ranking", "Run", "__version__"]
