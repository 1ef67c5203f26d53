"""`python -m recon`: see recon/cli.py."""

import sys

from recon.cli import main

sys.exit(main())
