"""Scenario sweeps: a sweep file (parameters x seeds over a base scenario) expanded into whole
scenario runs executed by Dask, one results row per sample (`gridtwin sweep`)."""
