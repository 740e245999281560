from workfleet.cli.entry import main

main()
