"""The one way a read reaches the store: the gate, its limits, guard, lock-down and errors."""
