"""Windows and fan-out: range planning, dedup, settling, window slots, the concurrent stream."""
