"""lsq-sync: sync LeadSquared tasks into SQL and push local edits back."""

__version__ = "0.2.0"
