"""`python -m gan …` is the `gan` command."""

import sys

from gan.cli import main

sys.exit(main())
