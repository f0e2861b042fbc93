"""Pictures a run writes: image grids and training curves."""
