from virt_controller.main import main

raise SystemExit(main())
