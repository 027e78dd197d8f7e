"""The tables and sentences the chapters show, computed from the run's numbers (never typed)."""
