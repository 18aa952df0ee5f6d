"""Graphs: which components run, and who calls whom."""
