"""Routing of endpoint requests to model versions."""

from servion.routing.router import ArmStats, EndpointRouter, Route, merge_arm_stats, sticky_point

__all__ = ["ArmStats", "EndpointRouter", "Route", "merge_arm_stats", "sticky_point"]
