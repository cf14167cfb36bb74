"""Studies that measure the method (each a module with run_study() and main())."""
