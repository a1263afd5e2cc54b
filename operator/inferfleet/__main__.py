from inferfleet.cli import main

if __name__ == "__main__":  # not when a spawned process (gateway --workers) imports it
    main()
