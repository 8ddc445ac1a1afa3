"""cupy.lib on the stand-in: stride_tricks."""
from cupy.lib import stride_tricks  # noqa: F401
