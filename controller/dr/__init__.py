"""Demand response: events and their lifecycle, customer baselines, allocation of a requested
reduction over flexible resources, delivered-vs-requested performance, and the OpenADR 2.0b
VEN. See controller/dr/README.md for the interfaces the controller runtime calls."""
