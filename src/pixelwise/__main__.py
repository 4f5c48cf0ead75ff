"""`python -m pixelwise ...`, which is also how torchrun starts it: `torchrun -m pixelwise train ...`."""
import sys

from pixelwise.cli import main

sys.exit(main())
