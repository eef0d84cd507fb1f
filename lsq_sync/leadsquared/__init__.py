"""LeadSquared's wire: the HTTP client, the rate limiter, the task format (HTTP)."""
