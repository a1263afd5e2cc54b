from inferfleet.cli import main

main()
