"""Participant settlement: metered delivery against baseline, payments, penalties, credit
scores and green-credit incentive points, in exact cents."""
