"""Clean-room UniMatch flow network (gmflow-scale2-regrefine6), weight-compatible with the official release."""

from .loading import load_unimatch
from .model import UniMatch, build_unimatch

__all__ = ["UniMatch", "build_unimatch", "load_unimatch"]
