"""Readings of the host: CPU, RAM and GPUs."""
