"""The top of the house: the `run` supervisor and the runtime commands. Nothing imports it."""
