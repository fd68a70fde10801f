"""Benchmarks: lodresults measured side by side with what users would write instead."""
