"""`python -m densemtl_lab ...` is the same as the `densemtl-lab` command."""

from densemtl_lab.cli import main

raise SystemExit(main())
