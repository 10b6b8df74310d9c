"""Day-ahead market participation: bids from flexibility, a uniform-price clearing engine,
awards as dispatch targets and position tracking."""
