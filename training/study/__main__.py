"""`python -m training.study` is `scene-study`."""

import sys

from training.study.cli import main

sys.exit(main())
