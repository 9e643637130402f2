"""The results store and the queries and summaries over it."""
