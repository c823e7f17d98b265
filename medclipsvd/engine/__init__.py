"""Training, evaluation, methods and the experiment runner (see docs/training.md)."""
