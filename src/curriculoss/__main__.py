from curriculoss.cli import main

raise SystemExit(main())
