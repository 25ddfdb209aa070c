"""volplan's engine: loading, planning, rendering, executing, and the command line."""

__version__ = "0.1.0"
