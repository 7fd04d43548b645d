"""`python -m emocast_research <command>`: see `emocast_research.cli`."""
import sys

from .cli import main

sys.exit(main())
