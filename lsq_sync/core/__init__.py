"""The run (policy): its lifecycle, the driver loop and stop control, pull, push, merge."""
