"""The results site (`make site`): static HTML pages of every paper table and figure at every
scale, built from saved runs through `hightpr.tables`, and the status of every planned run
(`make status`, `hightpr-status`). docs/site.md describes both.
"""
