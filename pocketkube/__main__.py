"""Run the pocketkube CLI with python -m pocketkube."""

from pocketkube.cli import main

main.main()
