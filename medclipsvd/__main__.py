from medclipsvd.cli.app import main

main()
