"""`python -m agent ...` is `proxymeter-agent ...`."""

from agent.cli import main

raise SystemExit(main())
