from workfleet.cli.main import main

main()
