"""Entry points: they wire config, data, model, loss and regulariser together."""
