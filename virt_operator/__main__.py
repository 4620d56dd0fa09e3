from virt_operator.main import main

raise SystemExit(main())
