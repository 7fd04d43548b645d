"""`python -m emocast_core <command>`: see `emocast_core.cli`."""
import sys

from .cli import main

sys.exit(main())
