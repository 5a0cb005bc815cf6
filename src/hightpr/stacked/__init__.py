"""Ensemble members trained together: one process, one pass per epoch, each member its own run.

`hightpr.stacked.trainer.train_batched(member_configs, member_dirs)` is what `ensemble.batched=true`
runs (`hightpr.training.train_members`); `hightpr.stacked.model.StackedModel` is the stacked
network. The package imports nothing on its own: import its modules. docs/speed.md.
"""
