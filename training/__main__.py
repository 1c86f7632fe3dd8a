"""`python -m training` (and `torchrun -m training`) is `scene-train`."""

import sys

from training.train import main

sys.exit(main())
