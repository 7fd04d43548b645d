"""`python -m emocast_core <command>`: see `emocast_core.cli`."""
import os
import sys

# Waiting threads sleep instead of spinning. Torch's OpenMP threads otherwise spin for cores that
# other programs hold: on a busy 2-core machine the demo burned 716 CPU-seconds instead of about 40
# (docs/demo-model.md, "Speed"). The OpenMP runtime reads this once, when torch is imported, so it
# is set here, before the command line imports anything; only the command does it (importing the
# library changes no process-wide setting), and a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli import main  # noqa: E402 - after the wait policy, see above

sys.exit(main())
