from mosaicdiff.cli import main

raise SystemExit(main())
