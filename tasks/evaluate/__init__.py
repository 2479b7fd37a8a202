"""Do the models beat the simple rules? Rolling-origin backtests on the user's own warehouse."""
