"""Jobs over many images: everything mode into the users' formats (`everything_job`) and the
data engine's automatic stage (`auto_annotate`), as local loops."""

from .annotate import auto_annotate
from .local import JobSummary, everything_job

__all__ = ["JobSummary", "auto_annotate", "everything_job"]
