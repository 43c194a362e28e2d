"""The phases of a fit, from the command line to the written model."""
