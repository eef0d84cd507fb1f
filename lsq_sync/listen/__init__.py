"""`lsq-sync listen`: LeadSquared's webhooks in over HTTP, recorded as hints."""
