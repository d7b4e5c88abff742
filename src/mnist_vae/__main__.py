"""`python -m mnist_vae ...` is the `mnist-vae` command."""

import sys

from mnist_vae.command_line import main

sys.exit(main())
