"""Figures and montages (matplotlib)."""
