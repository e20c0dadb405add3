from curriculoss.harness.cli import main

raise SystemExit(main())
