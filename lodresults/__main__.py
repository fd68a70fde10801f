"""``python -m lodresults`` runs the command-line interface."""

from lodresults.cli import main

main()
