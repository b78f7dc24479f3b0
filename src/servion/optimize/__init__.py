"""Optimization: turn a registered model into a smaller or faster one that keeps its accuracy."""
