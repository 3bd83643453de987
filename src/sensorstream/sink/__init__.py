"""The micro-batch into the store, exactly once: parse, judge, merge, and the ledger."""
