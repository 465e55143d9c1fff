"""Typer sub-apps and command bodies, one module per command group."""
