"""driftline.cli."""
