"""Receiving Lab on Demand's webhooks: parse and check a push, queue it, apply its lab."""
