"""``python -m retailgan`` (and ``torchrun -m retailgan``): the command line."""

from retailgan.cli import main

main()
