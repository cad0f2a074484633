import sys

from tweetpulse.cli import main

sys.exit(main())
