"""``python -m flowsci.cli`` runs the console script (used by DDP to start the other ranks)."""

from flowsci.cli import main

main()
