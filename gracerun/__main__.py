from gracerun.cli import main

raise SystemExit(main())
