"""``chatmod eval``: an engine's verdicts against a labelled chat set (pure metrics and
threshold sweep, the labelled-file parser, and the trio runner that asks the engine)."""
