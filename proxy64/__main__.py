from proxy64.cli import main

raise SystemExit(main())
