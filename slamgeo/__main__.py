"""`python -m slamgeo` is the `slamgeo` command."""

from slamgeo.cli import main

if __name__ == "__main__":
    main()
