"""`python -m emocast_core.training {dataset,train} ...` (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
