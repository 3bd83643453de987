"""Local launchers for development and tests: a KRaft broker (or three) and a Spark standalone cluster."""
