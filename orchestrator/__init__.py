"""Sweep specs, Ray Tune launching, MLflow tracking, winners/report and the ``ablate`` CLI."""
