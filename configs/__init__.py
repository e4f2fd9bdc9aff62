"""Shipped LightningCLI configs, read with importlib.resources (``flowsci configs`` lists them)."""
