"""Domain packages: proteins, crystals, shapes, pde, trajectories, singlecell (imported lazily)."""
