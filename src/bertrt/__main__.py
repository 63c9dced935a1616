import sys

from bertrt.cli import main

sys.exit(main())
