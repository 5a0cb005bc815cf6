"""Hydra configs of hightpr (package data: `pkg://hightpr.conf`)."""
