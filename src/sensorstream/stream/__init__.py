"""Spark alone: the session and the query that hands each micro-batch to a sink."""
